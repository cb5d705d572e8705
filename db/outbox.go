package db

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect/pgdialect"
)

// OutboxEvent is a row of bucket_event_outbox: one Hatchet push, written in
// the transaction of the transition it announces and dispatched after commit.
type OutboxEvent struct {
	bun.BaseModel `bun:"table:bucket_event_outbox,alias:o"`

	ID                 int64           `bun:"id,pk,autoincrement"`
	EventKey           string          `bun:"event_key,notnull"`
	Payload            json.RawMessage `bun:"payload,type:jsonb,notnull"`
	AdditionalMetadata json.RawMessage `bun:"additional_metadata,type:jsonb"`
	IdempotencyKey     *string         `bun:"idempotency_key"`
	CreatedAt          time.Time       `bun:"created_at,nullzero,notnull,default:now()"`
	AvailableAt        time.Time       `bun:"available_at,nullzero,notnull,default:now()"`
	Attempts           int             `bun:"attempts,notnull"`
	LastError          *string         `bun:"last_error"`
	DispatchedAt       *time.Time      `bun:"dispatched_at"`
	// LeasedUntil is when the lease of the dispatcher pushing the row
	// lapses; nil when no dispatcher holds it.
	LeasedUntil *time.Time `bun:"leased_until"`
}

// ArmExpiryEvent is the key of the push that announces an expiry timer:
// the outbox sends every other push before it (the timers are rows
// already, and journeys wait on transitions).
const ArmExpiryEvent = "bucket:arm-expiry"

// InsertOutbox enqueues pushes. A push whose idempotency key is already in
// the outbox is skipped.
func InsertOutbox(ctx context.Context, idb bun.IDB, events []OutboxEvent) error {
	if len(events) == 0 {
		return nil
	}
	if _, err := idb.NewInsert().Model(&events).On("CONFLICT DO NOTHING").Exec(ctx); err != nil {
		return fmt.Errorf("enqueueing %d pushes: %w", len(events), err)
	}
	return nil
}

// ClaimOutbox leases, until now + lease, at most limit pending pushes that
// are due at now and that no other dispatcher holds, and returns them in
// the order they go out: every other push before the arms of expiry
// timers, then by when they became due, then by id. A row that failed
// backs off (MarkFailed), so rows not tried yet go out before it.
//
// The due rows are found by walking bucket_event_outbox_claim_idx, whose
// order is the ORDER BY here (the key is written into the statement, as
// the index's expression holds it), and updated by id: a claim reads the
// rows it leases, not every pending row.
func ClaimOutbox(ctx context.Context, idb bun.IDB, now time.Time, lease time.Duration, limit int) ([]OutboxEvent, error) {
	var rows []OutboxEvent
	err := idb.NewRaw(`
		UPDATE bucket_event_outbox AS o SET leased_until = ?0
		WHERE o.id = ANY(ARRAY(
			SELECT id FROM bucket_event_outbox
			WHERE dispatched_at IS NULL AND available_at <= ?1 AND (leased_until IS NULL OR leased_until <= ?1)
			ORDER BY event_key = ?3, available_at, id
			LIMIT ?2
			FOR UPDATE SKIP LOCKED))
		RETURNING o.*`, now.Add(lease), now, limit, ArmExpiryEvent).Scan(ctx, &rows)
	if err != nil {
		return nil, fmt.Errorf("claiming pending pushes: %w", err)
	}
	slices.SortFunc(rows, func(a, b OutboxEvent) int {
		return cmp.Or(cmpBool(a.EventKey == ArmExpiryEvent, b.EventKey == ArmExpiryEvent),
			a.AvailableAt.Compare(b.AvailableAt), cmp.Compare(a.ID, b.ID))
	})
	return rows, nil
}

func cmpBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return 1
	}
	return -1
}

// MarkDispatched records that the pushes reached Hatchet.
func MarkDispatched(ctx context.Context, idb bun.IDB, ids []int64, now time.Time) error {
	_, err := idb.NewUpdate().TableExpr("bucket_event_outbox AS o").
		Set("dispatched_at = ?", now).
		Set("leased_until = NULL").
		Where("o.id = ANY(?::bigint[])", pgdialect.Array(ids)).
		Exec(ctx)
	if err != nil {
		return fmt.Errorf("marking %d pushes dispatched: %w", len(ids), err)
	}
	return nil
}

// ReleaseOutbox gives claimed pushes back unsent: due again at once,
// their attempts unchanged.
func ReleaseOutbox(ctx context.Context, idb bun.IDB, ids []int64) error {
	return releaseLeases(ctx, idb, "bucket_event_outbox", "dispatched_at", "pushes", ids)
}

// MarkFailed records a failed attempt at the pushes and backs each off:
// it becomes due again at now + base·2^attempts, at most now + limit.
func MarkFailed(ctx context.Context, idb bun.IDB, ids []int64, cause string, now time.Time, base, limit time.Duration) error {
	_, err := idb.NewUpdate().TableExpr("bucket_event_outbox AS o").
		Set("attempts = o.attempts + 1").
		Set("leased_until = NULL").
		Set("last_error = ?", cause).
		Set("available_at = ?::timestamptz + least(? * interval '1 microsecond', ? * interval '1 microsecond' * power(2, least(o.attempts, 30)))",
			now, limit.Microseconds(), base.Microseconds()).
		Where("o.id = ANY(?::bigint[])", pgdialect.Array(ids)).
		Exec(ctx)
	if err != nil {
		return fmt.Errorf("recording a failed push of %d events: %w", len(ids), err)
	}
	return nil
}

// OutboxSummary describes the pushes still to send.
type OutboxSummary struct {
	Pending       int        `bun:"pending"`
	OldestPending *time.Time `bun:"oldest"`
	// LastErrors are the most recently failed pending pushes, newest first.
	LastErrors []OutboxEvent `bun:"-"`
}

// SummarizeOutbox counts the pending pushes and returns up to errorLimit
// of those whose last attempt failed (none when errorLimit is 0).
func SummarizeOutbox(ctx context.Context, idb bun.IDB, errorLimit int) (OutboxSummary, error) {
	var s OutboxSummary
	err := idb.NewSelect().TableExpr("bucket_event_outbox AS o").
		ColumnExpr("count(*) AS pending, min(o.created_at) AS oldest").
		Where("o.dispatched_at IS NULL").
		Scan(ctx, &s.Pending, &s.OldestPending)
	if err != nil {
		return s, fmt.Errorf("counting pending pushes: %w", err)
	}
	if errorLimit <= 0 {
		return s, nil
	}
	err = idb.NewSelect().Model(&s.LastErrors).
		Where("o.dispatched_at IS NULL AND o.last_error IS NOT NULL").
		OrderExpr("o.available_at DESC, o.id DESC").
		Limit(int64(errorLimit)).
		Scan(ctx)
	if err != nil {
		return s, fmt.Errorf("reading failed pushes: %w", err)
	}
	return s, nil
}

// RetryOutboxNow makes the pending pushes that are backing off due at
// now, and returns how many: once Hatchet is back, they need not wait out
// a backoff earned while it was away. Rows a dispatcher is pushing are
// left to it.
func RetryOutboxNow(ctx context.Context, idb bun.IDB, now time.Time) (int, error) {
	res, err := idb.NewUpdate().TableExpr("bucket_event_outbox AS o").
		Set("available_at = ?", now).
		Where("o.dispatched_at IS NULL AND o.available_at > ?", now).
		Where("o.leased_until IS NULL OR o.leased_until <= ?", now).
		Exec(ctx)
	if err != nil {
		return 0, fmt.Errorf("retrying the pending pushes: %w", err)
	}
	n, _ := res.RowsAffected()
	return int(n), nil
}
