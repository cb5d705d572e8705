package db

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect/pgdialect"
)

// Delivery is a row of bucket_event_deliveries: one transition to send to
// one destination other than Hatchet (contract §15), written in the
// transaction of the transition and sent after commit by that
// destination's dispatcher.
type Delivery struct {
	bun.BaseModel `bun:"table:bucket_event_deliveries,alias:d"`

	ID          int64  `bun:"id,pk,autoincrement"`
	Destination string `bun:"destination,notnull"`
	UserID      string `bun:"user_id,notnull"`
	BucketID    string `bun:"bucket_id,notnull"`
	// IdempotencyKey is the transition's: one delivery per destination.
	IdempotencyKey string `bun:"idempotency_key,notnull"`
	// Payload is what the destination is sent: a webhook's body, or the
	// person properties PostHog sets or unsets.
	Payload     json.RawMessage `bun:"payload,type:jsonb,notnull"`
	CreatedAt   time.Time       `bun:"created_at,nullzero,notnull,default:now()"`
	AvailableAt time.Time       `bun:"available_at,nullzero,notnull,default:now()"`
	LeasedUntil *time.Time      `bun:"leased_until"`
	Attempts    int             `bun:"attempts,notnull"`
	LastError   *string         `bun:"last_error"`
	DeliveredAt *time.Time      `bun:"delivered_at"`
	DeadAt      *time.Time      `bun:"dead_at"`
}

// InsertDeliveries queues the deliveries, due at now. A delivery whose
// destination and key are queued already is skipped.
func InsertDeliveries(ctx context.Context, idb bun.IDB, rows []Delivery, now time.Time) error {
	if len(rows) == 0 {
		return nil
	}
	for i := range rows {
		rows[i].CreatedAt, rows[i].AvailableAt = now, now
	}
	_, err := idb.NewInsert().Model(&rows).
		Column("destination", "user_id", "bucket_id", "idempotency_key", "payload", "created_at", "available_at").
		On("CONFLICT DO NOTHING").
		Exec(ctx)
	if err != nil {
		return fmt.Errorf("queueing %d deliveries: %w", len(rows), err)
	}
	return nil
}

// ClaimDeliveries leases, until now + lease, at most limit of the
// destination's deliveries that are due at now and that no dispatcher
// holds, oldest first — and only the first undelivered one of each
// (user, bucket): a later delivery waits until the ones before it are
// delivered, so a retried entered never lands after the left that followed
// it. A dead delivery holds the ones after it back too, until it is
// retried (RetryDeadDeliveries).
//
// The head is found by a correlated "first id" subquery rather than NOT
// EXISTS: before the table's first ANALYZE the planner turned the anti
// join into a scan of every pending row for each candidate (146 ms for a
// claim over 5 000 fresh rows, against 2 ms this way).
func ClaimDeliveries(ctx context.Context, idb bun.IDB, destination string, now time.Time, lease time.Duration, limit int) ([]Delivery, error) {
	var rows []Delivery
	err := idb.NewRaw(`
		UPDATE bucket_event_deliveries AS d SET leased_until = ?0
		FROM (
			SELECT p.id FROM bucket_event_deliveries AS p
			WHERE p.destination = ?1 AND p.delivered_at IS NULL AND p.dead_at IS NULL AND p.available_at <= ?2
				AND (p.leased_until IS NULL OR p.leased_until <= ?2)
				AND p.id = (SELECT e.id FROM bucket_event_deliveries AS e
					WHERE e.destination = p.destination AND e.user_id = p.user_id AND e.bucket_id = p.bucket_id
						AND e.delivered_at IS NULL
					ORDER BY e.id LIMIT 1)
			ORDER BY p.available_at, p.id
			LIMIT ?3
			FOR UPDATE SKIP LOCKED
		) AS due
		WHERE d.id = due.id
		RETURNING d.*`, now.Add(lease), destination, now, limit).Scan(ctx, &rows)
	if err != nil {
		return nil, fmt.Errorf("claiming the deliveries to %s: %w", destination, err)
	}
	return rows, nil
}

// MarkDelivered records that the deliveries arrived.
func MarkDelivered(ctx context.Context, idb bun.IDB, ids []int64, now time.Time) error {
	if len(ids) == 0 {
		return nil
	}
	_, err := idb.NewUpdate().TableExpr("bucket_event_deliveries AS d").
		Set("delivered_at = ?", now).
		Set("leased_until = NULL").
		Where("d.id = ANY(?::bigint[])", pgdialect.Array(ids)).
		Exec(ctx)
	if err != nil {
		return fmt.Errorf("marking %d deliveries delivered: %w", len(ids), err)
	}
	return nil
}

// ReleaseDeliveries lets claimed deliveries go unsent: due again at once,
// their attempts unchanged.
func ReleaseDeliveries(ctx context.Context, idb bun.IDB, ids []int64) error {
	return releaseLeases(ctx, idb, "bucket_event_deliveries", "delivered_at", "deliveries", ids)
}

// releaseLeases ends the leases of the rows ids of a leased table (the
// outbox, the deliveries) that were not sent yet, whose sent-at column is
// sent; noun names the rows in an error.
func releaseLeases(ctx context.Context, idb bun.IDB, table, sent, noun string, ids []int64) error {
	if len(ids) == 0 {
		return nil
	}
	_, err := idb.NewUpdate().Table(table).
		Set("leased_until = NULL").
		Where("id = ANY(?::bigint[])", pgdialect.Array(ids)).
		Where("? IS NULL", bun.Ident(sent)).
		Exec(ctx)
	if err != nil {
		return fmt.Errorf("releasing %d %s: %w", len(ids), noun, err)
	}
	return nil
}

// Backoff is how a failed delivery waits: base·2^attempts, at most Limit,
// and dead once it has failed MaxAttempts times.
type Backoff struct {
	Base        time.Duration
	Limit       time.Duration
	MaxAttempts int
}

// MarkDeliveryFailed records a failed attempt at the delivery: it backs
// off, or, at its last attempt, is dead.
func MarkDeliveryFailed(ctx context.Context, idb bun.IDB, id int64, cause string, now time.Time, b Backoff) error {
	_, err := idb.NewUpdate().TableExpr("bucket_event_deliveries AS d").
		Set("attempts = d.attempts + 1").
		Set("leased_until = NULL").
		Set("last_error = ?", cause).
		Set("available_at = ?::timestamptz + least(? * interval '1 microsecond', ? * interval '1 microsecond' * power(2, least(d.attempts, 30)))",
			now, b.Limit.Microseconds(), b.Base.Microseconds()).
		Set("dead_at = CASE WHEN d.attempts + 1 >= ? THEN ?::timestamptz END", b.MaxAttempts, now).
		Where("d.id = ?", id).
		Exec(ctx)
	if err != nil {
		return fmt.Errorf("recording a failed delivery: %w", err)
	}
	return nil
}

// RetryDeadDeliveries queues the dead deliveries of the destination (of
// every destination with "") again, due at now with their attempts
// counted afresh, and returns how many.
func RetryDeadDeliveries(ctx context.Context, idb bun.IDB, destination string, now time.Time) (int, error) {
	q := idb.NewUpdate().TableExpr("bucket_event_deliveries AS d").
		Set("dead_at = NULL").Set("attempts = 0").Set("available_at = ?", now).
		Where("d.dead_at IS NOT NULL")
	if destination != "" {
		q = q.Where("d.destination = ?", destination)
	}
	res, err := q.Exec(ctx)
	if err != nil {
		return 0, fmt.Errorf("queueing dead deliveries again: %w", err)
	}
	n, _ := res.RowsAffected()
	return int(n), nil
}

// PendingDeliveries counts the deliveries not delivered yet, dead ones
// aside.
func PendingDeliveries(ctx context.Context, idb bun.IDB) (int, error) {
	n, err := idb.NewSelect().TableExpr("bucket_event_deliveries AS d").
		Where("d.delivered_at IS NULL AND d.dead_at IS NULL").
		Count(ctx)
	if err != nil {
		return 0, fmt.Errorf("counting pending deliveries: %w", err)
	}
	return int(n), nil
}

// Backlog is what waits for one destination.
type Backlog struct {
	Pending int
	Oldest  *time.Time // the oldest pending one's created_at
	Dead    int
}

// DeliveryBacklog counts the pending and dead deliveries of each
// destination that has any. It reads only the undelivered rows (the
// partial index by subject), so it stays cheap however many were
// delivered.
func DeliveryBacklog(ctx context.Context, idb bun.IDB) (map[string]Backlog, error) {
	var rows []struct {
		Destination string     `bun:"destination"`
		Pending     int        `bun:"pending"`
		Oldest      *time.Time `bun:"oldest"`
		Dead        int        `bun:"dead"`
	}
	err := idb.NewRaw(`
		SELECT d.destination,
			count(*) FILTER (WHERE d.dead_at IS NULL) AS pending,
			min(d.created_at) FILTER (WHERE d.dead_at IS NULL) AS oldest,
			count(*) FILTER (WHERE d.dead_at IS NOT NULL) AS dead
		FROM bucket_event_deliveries AS d
		WHERE d.delivered_at IS NULL
		GROUP BY d.destination`).Scan(ctx, &rows)
	if err != nil {
		return nil, fmt.Errorf("counting the undelivered deliveries: %w", err)
	}
	out := make(map[string]Backlog, len(rows))
	for _, r := range rows {
		out[r.Destination] = Backlog{Pending: r.Pending, Oldest: r.Oldest, Dead: r.Dead}
	}
	return out, nil
}

// DeliveryStats counts one destination's deliveries.
type DeliveryStats struct {
	Destination string  `bun:"destination" json:"id"`
	Pending     int     `bun:"pending" json:"pending"`
	Delivered   int     `bun:"delivered" json:"delivered"`
	Dead        int     `bun:"dead" json:"dead"`
	LastError   *string `bun:"last_error" json:"lastError"`
}

// DeliveryStatsByDestination counts the deliveries of every destination
// that has any, with the last error of its most recently failed one.
func DeliveryStatsByDestination(ctx context.Context, idb bun.IDB) (map[string]DeliveryStats, error) {
	var rows []DeliveryStats
	err := idb.NewRaw(`
		SELECT d.destination,
			count(*) FILTER (WHERE d.delivered_at IS NULL AND d.dead_at IS NULL) AS pending,
			count(*) FILTER (WHERE d.delivered_at IS NOT NULL) AS delivered,
			count(*) FILTER (WHERE d.dead_at IS NOT NULL) AS dead,
			(SELECT f.last_error FROM bucket_event_deliveries AS f
				WHERE f.destination = d.destination AND f.delivered_at IS NULL AND f.last_error IS NOT NULL
				ORDER BY f.attempts DESC, f.id DESC LIMIT 1) AS last_error
		FROM bucket_event_deliveries AS d
		GROUP BY d.destination`).Scan(ctx, &rows)
	if err != nil {
		return nil, fmt.Errorf("counting deliveries: %w", err)
	}
	out := make(map[string]DeliveryStats, len(rows))
	for _, r := range rows {
		out[r.Destination] = r
	}
	return out, nil
}
