package db

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/uptrace/bun"
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
}

// InsertUserEvents inserts events as given.
func InsertUserEvents(ctx context.Context, idb bun.IDB, events []UserEvent) error {
	if len(events) == 0 {
		return nil
	}
	if _, err := idb.NewInsert().Model(&events).Exec(ctx); err != nil {
		return fmt.Errorf("inserting %d user events: %w", len(events), err)
	}
	return nil
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

// InsertUserEventsOnce inserts events keyed by idempotency key, skipping
// any whose key is already stored, and returns the keys it inserted: an
// event whose key is not returned was emitted before.
func InsertUserEventsOnce(ctx context.Context, idb bun.IDB, events []UserEvent) (map[string]bool, error) {
	inserted := map[string]bool{}
	if len(events) == 0 {
		return inserted, nil
	}
	var keys []string
	err := idb.NewInsert().Model(&events).
		On("CONFLICT (idempotency_key) DO NOTHING").
		Returning("idempotency_key").
		Scan(ctx, &keys)
	if err != nil {
		return nil, fmt.Errorf("inserting %d user events: %w", len(events), err)
	}
	for _, k := range keys {
		inserted[k] = true
	}
	return inserted, nil
}

// InsertUserEvent stores one event. With an idempotency key that is
// already stored it stores nothing and returns false.
func InsertUserEvent(ctx context.Context, idb bun.IDB, ev *UserEvent) (bool, error) {
	res, err := idb.NewInsert().Model(ev).On("CONFLICT (idempotency_key) DO NOTHING").Exec(ctx)
	if err != nil {
		return false, fmt.Errorf("storing a %q event of user %q: %w", ev.Event, ev.UserID, err)
	}
	n, _ := res.RowsAffected()
	return n == 1, nil
}
