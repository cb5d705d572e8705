package db

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect/pgdialect"

	"github.com/bucketworker/bucket-worker/buckets"
)

// UserEvent is a row of user_events: one event a user fired, or one
// transition the worker emitted.
type UserEvent struct {
	bun.BaseModel `bun:"table:user_events,alias:e"`

	ID             string          `bun:"id,pk,type:uuid,nullzero,default:gen_random_uuid()"`
	OrganizationID *string         `bun:"organization_id"`
	UserID         string          `bun:"user_id,notnull"`
	Event          string          `bun:"event,notnull"`
	Properties     json.RawMessage `bun:"properties,type:jsonb"`
	IdempotencyKey *string         `bun:"idempotency_key"`
	Source         *string         `bun:"source"`
	OccurredAt     time.Time       `bun:"occurred_at,notnull"`
	// ContactID is the user's live contact, written only where the table
	// has the column (Schema.EventContactID).
	ContactID *string `bun:"contact_id,type:uuid,scanonly"`
}

// CountUserEvents counts the user's events named event at or after since;
// a zero since counts them all.
func CountUserEvents(ctx context.Context, idb bun.IDB, userID, event string, since time.Time) (int64, error) {
	q := idb.NewSelect().TableExpr("user_events AS e").
		Where("e.user_id = ?", userID).
		Where("e.event = ?", event)
	if !since.IsZero() {
		q = q.Where("e.occurred_at >= ?", since)
	}
	n, err := q.Count(ctx)
	if err != nil {
		return 0, fmt.Errorf("counting %q events of user %q: %w", event, userID, err)
	}
	return int64(n), nil
}

// UserEventProperties returns the properties of the user's events named
// event at or after since (a zero since takes them all), one per event,
// decoded as contract §3.1 reads numbers; an event without properties has
// none.
func UserEventProperties(ctx context.Context, idb bun.IDB, userID, event string, since time.Time) ([]buckets.Properties, error) {
	q := idb.NewSelect().TableExpr("user_events AS e").
		Column("e.properties").
		Where("e.user_id = ?", userID).
		Where("e.event = ?", event)
	if !since.IsZero() {
		q = q.Where("e.occurred_at >= ?", since)
	}
	var docs []json.RawMessage
	if err := q.Scan(ctx, &docs); err != nil {
		return nil, fmt.Errorf("reading %q events of user %q: %w", event, userID, err)
	}
	out := make([]buckets.Properties, len(docs))
	for i, doc := range docs {
		out[i] = buckets.DecodeProperties(doc)
	}
	return out, nil
}

// InsertUserEvents stores the events in one statement and reports, for
// each, whether it was stored: an event whose idempotency key is already
// stored is not. Their ids are set here, time-ordered (NewID). It writes
// the rows as one VALUES list: for the few rows of a round, parsing that
// costs less than unnesting seven arrays. Where the table has contact_id
// (Schema), each row's ContactID goes there.
func InsertUserEvents(ctx context.Context, idb bun.IDB, s Schema, events []UserEvent) ([]bool, error) {
	stored := make([]bool, len(events))
	if len(events) == 0 {
		return stored, nil
	}
	rows := slices.Clone(events)
	index := make(map[string]int, len(rows))
	for i := range rows {
		rows[i].ID = NewID()
		if len(rows[i].Properties) == 0 {
			rows[i].Properties = json.RawMessage(`{}`)
		}
		index[rows[i].ID] = i
	}
	columns := []string{"id", "user_id", "event", "properties", "idempotency_key", "source", "occurred_at"}
	if s.EventContactID {
		columns = append(columns, "contact_id")
	}
	var inserted []string
	err := idb.NewInsert().Model(&rows).
		Column(columns...).
		On("CONFLICT (idempotency_key) DO NOTHING").
		Returning("id").
		Scan(ctx, &inserted)
	if err != nil {
		return nil, fmt.Errorf("storing %d events: %w", len(rows), err)
	}
	for _, id := range inserted {
		stored[index[id]] = true
	}
	return stored, nil
}

// StoredKeys returns which of the idempotency keys are stored.
func StoredKeys(ctx context.Context, idb bun.IDB, keys []string) (map[string]bool, error) {
	out := map[string]bool{}
	if len(keys) == 0 {
		return out, nil
	}
	var found []string
	err := idb.NewSelect().TableExpr("user_events AS e").Column("e.idempotency_key").
		Where("e.idempotency_key = ANY(?)", pgdialect.Array(keys)).
		Scan(ctx, &found)
	if err != nil {
		return nil, fmt.Errorf("looking up %d idempotency keys: %w", len(keys), err)
	}
	for _, k := range found {
		out[k] = true
	}
	return out, nil
}

// Emissions are the events of a batch of transitions of one kind: of one
// bucket, one transition, from one source, for one reason (contract §5.1),
// or the fires of its dwell schedules (§14).
type Emissions struct {
	BucketID   string
	BucketName string
	Transition string
	Source     string
	// Reason is why the members left; empty for joins and dwell fires.
	Reason string
	Events []Emission
}

// Emission is one event of a transition: the bucket's own
// bucket:<transition>:<id>, the generic bucket:<transition>, or a dwell
// fire's bucket:dwell:<id>:<label>.
type Emission struct {
	Event          string
	IdempotencyKey string
	UserID         string
	UserEmail      string
	EntryCount     int
	// DwellCount is a dwell fire's ordinal; zero for a join or a leave.
	DwellCount int
}

// Properties are the properties of the event e of the batch as
// InsertEmissions stores them, for matching in Go (a journey's exitOn
// where).
func (b Emissions) Properties(e Emission) map[string]any {
	props := map[string]any{
		"bucketId":   b.BucketID,
		"bucketName": b.BucketName,
		"userId":     e.UserID,
		"transition": b.Transition,
		"source":     b.Source,
		"entryCount": e.EntryCount,
	}
	if b.Reason != "" {
		props["reason"] = b.Reason
	}
	if e.DwellCount > 0 {
		props["dwellCount"] = e.DwellCount
	}
	return props
}

// InsertEmissions stores each transition event in user_events (source
// 'bucket', occurred now, a time-ordered id, and the user's live contact
// where the table has contact_id) and its push in the outbox, in one
// statement, and returns the keys it stored. An event whose key is already
// stored was emitted before: neither it nor its push is written again
// (contract §5.2).
//
// The statement builds each event's properties (Emissions.Properties) and
// its push, payload {userId, userEmail, properties} and metadata {bucketId,
// userId, transition, idempotencyKey}, from the batch's values and one
// array per varying field: sending them as JSON documents made Postgres
// parse 30 000 of them per 10 000 transitions.
func InsertEmissions(ctx context.Context, idb bun.IDB, s Schema, b Emissions, now time.Time) (map[string]bool, error) {
	stored := map[string]bool{}
	n := len(b.Events)
	if n == 0 {
		return stored, nil
	}
	ids, events, keys, users, emails := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	counts, dwellCounts := make([]int, n), make([]int, n)
	for i, e := range b.Events {
		ids[i], events[i], keys[i], users[i], emails[i] = NewID(), e.Event, e.IdempotencyKey, e.UserID, e.UserEmail
		counts[i], dwellCounts[i] = e.EntryCount, e.DwellCount
	}
	contactColumn, contactValue := "", ""
	if s.EventContactID {
		contactColumn, contactValue = ", contact_id", ", "+liveContactOf("x.user_id")
	}
	var inserted []string
	err := queryParams(ctx, idb, &inserted, `
		WITH x AS (
			SELECT x.*, jsonb_build_object(
					'bucketId', $2::text, 'bucketName', $3::text, 'userId', x.user_id,
					'transition', $4::text, 'source', $5::text, 'entryCount', x.entry_count
				) || CASE WHEN $6::text = '' THEN '{}' ELSE jsonb_build_object('reason', $6::text) END
				|| CASE WHEN x.dwell_count > 0 THEN jsonb_build_object('dwellCount', x.dwell_count) ELSE '{}' END AS properties
			FROM unnest($7::text[], $8::text[], $9::text[], $10::text[], $11::int[], $12::int[], $13::uuid[])
				AS x(event, key, user_id, email, entry_count, dwell_count, id)
		), stored AS (
			INSERT INTO user_events (id, user_id, event, properties, idempotency_key, source, occurred_at`+contactColumn+`)
			SELECT id, user_id, event, properties, key, 'bucket', $1::timestamptz`+contactValue+` FROM x
			ON CONFLICT (idempotency_key) DO NOTHING
			RETURNING idempotency_key
		)
		INSERT INTO bucket_event_outbox (event_key, payload, additional_metadata, idempotency_key, created_at, available_at)
		SELECT x.event,
			jsonb_build_object('userId', x.user_id, 'userEmail', x.email, 'properties', x.properties),
			jsonb_build_object('bucketId', $2::text, 'userId', x.user_id, 'transition', $4::text, 'idempotencyKey', x.key),
			x.key, $1::timestamptz, $1::timestamptz
		FROM x JOIN stored ON stored.idempotency_key = x.key
		ON CONFLICT DO NOTHING
		RETURNING idempotency_key`,
		now, b.BucketID, b.BucketName, b.Transition, b.Source, b.Reason,
		textArray(events), textArray(keys), textArray(users), textArray(emails), intArray(counts),
		intArray(dwellCounts), textArray(ids))
	if err != nil {
		return nil, fmt.Errorf("storing %d transition events: %w", n, err)
	}
	for _, k := range inserted {
		stored[k] = true
	}
	return stored, nil
}

// TransitionEvent is a transition event of a user with the state of its push.
type TransitionEvent struct {
	UserEvent  `bun:",extend"`
	Dispatched bool `bun:"dispatched"`
}

// UserTransitions returns the user's transition events (generic ones too),
// oldest first, optionally of one bucket, each with whether its push went
// out.
func UserTransitions(ctx context.Context, idb bun.IDB, userID, bucketID string) ([]TransitionEvent, error) {
	var rows []TransitionEvent
	q := idb.NewSelect().Model(&rows).
		ColumnExpr("e.*").
		ColumnExpr("coalesce(o.dispatched_at IS NOT NULL, false) AS dispatched").
		Join("LEFT JOIN bucket_event_outbox AS o ON o.idempotency_key = e.idempotency_key").
		Where("e.user_id = ? AND e.source = 'bucket'", userID).
		OrderExpr("e.occurred_at, e.idempotency_key")
	if bucketID != "" {
		q = q.Where("e.properties ->> 'bucketId' = ?", bucketID)
	}
	if err := q.Scan(ctx); err != nil {
		return nil, fmt.Errorf("reading the transitions of user %q: %w", userID, err)
	}
	return rows, nil
}

// LatestUserEvent returns when the user last fired the event, or nil.
func LatestUserEvent(ctx context.Context, idb bun.IDB, userID, event string) (*time.Time, error) {
	var at []time.Time
	err := idb.NewSelect().TableExpr("user_events AS e").ColumnExpr("e.occurred_at").
		Where("e.user_id = ? AND e.event = ?", userID, event).
		OrderExpr("e.occurred_at DESC").Limit(1).
		Scan(ctx, &at)
	if err != nil {
		return nil, fmt.Errorf("reading the latest %q event of user %q: %w", event, userID, err)
	}
	if len(at) == 0 {
		return nil, nil
	}
	return &at[0], nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
