package tasks

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/bucketworker/bucket-worker/db"
)

// ForgetOutput is the result of forgetting a user.
type ForgetOutput struct {
	UserID string `json:"userId"`
	db.Erased
}

// Forget honours an erasure request: in one transaction it soft-deletes
// the user's contact and memberships without emitting anything. From then
// on no path — sweep, ingest, expiry, backfill — touches the user.
func Forget(ctx context.Context, d *Deps, userID string) (ForgetOutput, error) {
	out := ForgetOutput{UserID: userID}
	if userID == "" {
		return out, fmt.Errorf("%w: a user id is required", ErrInvalidInput)
	}
	// In a transaction of the engine's, which runs again when a deadlock
	// with a path that moves the user picks it as the victim.
	_, err := d.transact(ctx, d.Now(), func(ctx context.Context, t *txn) error {
		var err error
		out.Erased, err = db.EraseUser(ctx, t.tx, userID, t.now)
		return err
	})
	if err != nil {
		return out, fmt.Errorf("forgetting user %q: %w", userID, err)
	}
	d.Logger.InfoContext(ctx, "user forgotten", slog.String("user_id", userID),
		slog.Int("contacts", out.Contacts), slog.Int("memberships", out.Memberships))
	return out, nil
}
