package db

import (
	"context"
	"fmt"
	"time"

	"github.com/uptrace/bun"
)

// ExpiryTimer is a row of bucket_expiry_timers: the armed deadline of one
// fastExpiry membership (contract §10). FiresAt is the membership's
// expires_at when it was armed.
type ExpiryTimer struct {
	bun.BaseModel `bun:"table:bucket_expiry_timers,alias:t"`

	RowID     string    `bun:"row_id,pk,type:uuid"`
	FiresAt   time.Time `bun:"fires_at,pk"`
	BucketID  string    `bun:"bucket_id,notnull"`
	UserID    string    `bun:"user_id,notnull"`
	UserEmail *string   `bun:"user_email"`
	CreatedAt time.Time `bun:"created_at,nullzero,notnull,default:now()"`
}

// ArmTimers stores the timers; a timer already armed is left as it is.
func ArmTimers(ctx context.Context, idb bun.IDB, timers []ExpiryTimer) error {
	if len(timers) == 0 {
		return nil
	}
	if _, err := idb.NewInsert().Model(&timers).On("CONFLICT DO NOTHING").Exec(ctx); err != nil {
		return fmt.Errorf("arming %d expiry timers: %w", len(timers), err)
	}
	return nil
}

// ClaimDueTimers deletes and returns, earliest first, at most limit timers
// due at now: those that fire before now. At fires_at itself the window of
// the event that armed the timer still holds it (windows are inclusive),
// so a timer is due only once its instant has passed. Timers another
// transaction holds are skipped, so replicas share the work; a transaction
// that rolls back puts its timers back.
func ClaimDueTimers(ctx context.Context, tx bun.Tx, now time.Time, limit int) ([]ExpiryTimer, error) {
	var rows []ExpiryTimer
	err := tx.NewRaw(`
		DELETE FROM bucket_expiry_timers AS t
		USING (
			SELECT row_id, fires_at FROM bucket_expiry_timers
			WHERE fires_at < ?
			ORDER BY fires_at
			LIMIT ?
			FOR UPDATE SKIP LOCKED
		) AS due
		WHERE t.row_id = due.row_id AND t.fires_at = due.fires_at
		RETURNING t.*`, now, limit).Scan(ctx, &rows)
	if err != nil {
		return nil, fmt.Errorf("claiming due expiry timers: %w", err)
	}
	return rows, nil
}

// DisarmTimer deletes one timer, if it is still armed.
func DisarmTimer(ctx context.Context, idb bun.IDB, rowID string, firesAt time.Time) error {
	_, err := idb.NewDelete().Model((*ExpiryTimer)(nil)).
		Where("t.row_id = ? AND t.fires_at = ?", rowID, firesAt).
		Exec(ctx)
	if err != nil {
		return fmt.Errorf("disarming the expiry timer of membership %s: %w", rowID, err)
	}
	return nil
}

// TimerStats summarizes the armed timers.
type TimerStats struct {
	Armed    int        `bun:"armed"`
	Due      int        `bun:"due"`
	Earliest *time.Time `bun:"earliest"`
}

// SummarizeTimers counts the armed timers and those due at now (see
// ClaimDueTimers).
func SummarizeTimers(ctx context.Context, idb bun.IDB, now time.Time) (TimerStats, error) {
	var s TimerStats
	err := idb.NewSelect().TableExpr("bucket_expiry_timers AS t").
		ColumnExpr("count(*) AS armed").
		ColumnExpr("count(*) FILTER (WHERE t.fires_at < ?) AS due", now).
		ColumnExpr("min(t.fires_at) AS earliest").
		Scan(ctx, &s)
	if err != nil {
		return s, fmt.Errorf("counting expiry timers: %w", err)
	}
	return s, nil
}
