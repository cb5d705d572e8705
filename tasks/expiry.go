package tasks

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"time"

	"github.com/google/uuid"
	"github.com/uptrace/bun"

	"github.com/bucketworker/bucket-worker/buckets"
	"github.com/bucketworker/bucket-worker/db"
)

// ExpiryResult is the result of bucket-expiry (contract §10).
type ExpiryResult struct {
	Status string `json:"status"`           // "skipped", "left" or "deferred"
	Reason string `json:"reason,omitempty"` // why it skipped
	RowID  string `json:"rowId,omitempty"`
}

// The reasons an expiry timer leaves nobody.
const (
	SkipUnregistered = "bucket_unregistered"
	SkipDisabled     = "bucket_disabled"
	SkipDeleted      = "contact_deleted"
	SkipStillMember  = "still_member"
	SkipReArmed      = "re_armed_or_already_left"
)

// ArmedExpiry is a validated bucket:arm-expiry payload.
type ArmedExpiry struct {
	ArmExpiryInput
	ExpiresAt time.Time
}

// ParseArmExpiry validates a bucket:arm-expiry payload; errors wrap
// ErrInvalidInput and name the field.
func ParseArmExpiry(payload []byte) (ArmedExpiry, error) {
	var a ArmedExpiry
	if _, err := objectFields(payload); err != nil {
		return a, fmt.Errorf("%w: the payload %v", ErrInvalidInput, err)
	}
	if err := json.Unmarshal(payload, &a.ArmExpiryInput); err != nil {
		return a, fmt.Errorf("%w: %v", ErrInvalidInput, err)
	}
	bad := func(field, format string, args ...any) error {
		return fmt.Errorf("%w: %s %s", ErrInvalidInput, field, fmt.Sprintf(format, args...))
	}
	if _, err := uuid.Parse(a.RowID); err != nil {
		return a, bad("rowId", "%q is not a membership row id", a.RowID)
	}
	if a.BucketID == "" {
		return a, bad("bucketId", "is required")
	}
	if a.UserID == "" {
		return a, bad("userId", "is required")
	}
	t, err := time.Parse(time.RFC3339Nano, a.ArmedExpiresAt)
	if err != nil {
		return a, bad("armedExpiresAt", "%q is not an RFC 3339 time", a.ArmedExpiresAt)
	}
	a.ExpiresAt = t
	return a, nil
}

// Sleep is how long the timer sleeps: ceil(msUntilExpiry / 1000) whole
// seconds, at least one (contract §10).
func (a ArmedExpiry) Sleep() time.Duration {
	seconds := math.Ceil(float64(a.MsUntilExpiry) / 1000)
	return time.Duration(max(1, seconds)) * time.Second
}

// Expire is what an expiry timer does when it wakes (contract §10): unless
// the bucket is gone or off, the user erased, or the criteria still hold,
// it leaves the armed membership — if it is still the one armed, with the
// same expires_at. It runs in one transaction.
func Expire(ctx context.Context, d *Deps, a ArmedExpiry) (ExpiryResult, error) {
	b, ok := d.Buckets.Get(a.BucketID)
	if !ok || b.Criteria == nil {
		return ExpiryResult{Status: "skipped", Reason: SkipUnregistered}, nil
	}
	on, err := d.Switch.Enabled(ctx, b.ID)
	if err != nil {
		return ExpiryResult{}, err
	}
	if !on {
		return ExpiryResult{Status: "skipped", Reason: SkipDisabled}, nil
	}
	now := d.Now()
	var res ExpiryResult
	_, err = transact(ctx, d, func(ctx context.Context, tx bun.Tx) (Outcome, error) {
		var out Outcome
		var err error
		res, out, err = expireInTx(ctx, tx, d, b, a, now)
		return out, err
	})
	if err != nil {
		return ExpiryResult{}, fmt.Errorf("expiring membership %s of bucket %q: %w", a.RowID, a.BucketID, err)
	}
	return res, nil
}

// expireInTx takes the user's locks before it reads anything it decides
// on — the contact, then the armed membership row (contract §5.3) — so a
// member who re-qualified while the timer slept or waited stays.
func expireInTx(ctx context.Context, tx bun.Tx, d *Deps, b *buckets.Bucket, a ArmedExpiry, now time.Time) (ExpiryResult, Outcome, error) {
	u, erased, err := liveSubject(ctx, tx, a.UserID, a.UserEmail)
	if err != nil {
		return ExpiryResult{}, Outcome{}, err
	}
	if erased {
		return ExpiryResult{Status: "skipped", Reason: SkipDeleted}, Outcome{}, nil
	}
	locked, err := db.LockMemberships(ctx, tx, []string{a.RowID})
	if err != nil {
		return ExpiryResult{}, Outcome{}, err
	}
	holds, err := buckets.Evaluate(ctx, b.Criteria, now, db.UserFacts{IDB: tx, UserID: u.UserID, Properties: u.Properties})
	if err != nil {
		return ExpiryResult{}, Outcome{}, err
	}
	if holds {
		return ExpiryResult{Status: "skipped", Reason: SkipStillMember}, Outcome{}, nil
	}
	if len(locked) == 0 || !armedBy(locked[0], b, a) {
		return ExpiryResult{Status: "skipped", Reason: SkipReArmed}, Outcome{}, nil
	}
	out, err := leave(ctx, tx, d, b, locked,
		leaveSpec{Source: SourceReconcile, Reason: ReasonCriteria, Unless: b.Criteria, ArmedExpiresAt: &a.ExpiresAt}, now)
	switch {
	case err != nil:
		return ExpiryResult{}, Outcome{}, err
	case out.Deferred > 0:
		return ExpiryResult{Status: "deferred", RowID: a.RowID}, out, nil
	case len(out.Transitions) == 0:
		return ExpiryResult{Status: "skipped", Reason: SkipReArmed}, out, nil
	}
	return ExpiryResult{Status: "left", RowID: a.RowID}, out, nil
}

// armedBy reports whether the active membership m is still the one the
// timer a was armed for: same bucket and user, same expires_at.
func armedBy(m db.Membership, b *buckets.Bucket, a ArmedExpiry) bool {
	return m.BucketID == b.ID && m.UserID == a.UserID && m.ExpiresAt != nil && m.ExpiresAt.Equal(a.ExpiresAt)
}
