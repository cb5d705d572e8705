package tasks

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"time"

	"github.com/google/uuid"

	"github.com/bucketworker/bucket-worker/db"
)

// ExpiryResult is the result of bucket-expiry and of the expire command
// (contract §10).
type ExpiryResult struct {
	// Status is StatusArmed (the timer waits for its deadline),
	// StatusLeft, StatusDeferred (minDwell holds the member; the sweep's
	// deferred pass owns the leave) or StatusSkipped.
	Status string `json:"status"`
	Reason string `json:"reason,omitempty"` // why it skipped
	RowID  string `json:"rowId,omitempty"`
	// FiresAt is when an armed timer fires.
	FiresAt *time.Time `json:"firesAt,omitempty"`
}

// The timers' pace in a running worker.
const (
	// ExpiryInterval is how often a running worker fires due timers.
	ExpiryInterval = time.Second
	// ExpiryBatch is how many due timers one transaction fires.
	ExpiryBatch = 1000
)

// ArmExpiryEvent is the push that announces an expiry timer; it runs bucket-expiry.
const ArmExpiryEvent = db.ArmExpiryEvent

// ArmedTimeFormat is how armedExpiresAt is written: RFC 3339 with
// microseconds, Postgres' precision, so it compares equal to the row.
const ArmedTimeFormat = "2006-01-02T15:04:05.000000Z07:00"

// ArmExpiryInput is the payload of bucket:arm-expiry.
type ArmExpiryInput struct {
	RowID          string `json:"rowId"`
	BucketID       string `json:"bucketId"`
	UserID         string `json:"userId"`
	UserEmail      string `json:"userEmail"`
	ArmedExpiresAt string `json:"armedExpiresAt"`
	MsUntilExpiry  int64  `json:"msUntilExpiry"`
}

// ArmedExpiry is a validated bucket:arm-expiry payload.
type ArmedExpiry struct {
	ArmExpiryInput
	ExpiresAt time.Time
}

// ParseArmExpiry validates a bucket:arm-expiry payload; errors wrap
// ErrInvalidInput and name the field.
func ParseArmExpiry(payload []byte) (ArmedExpiry, error) {
	var a ArmedExpiry
	fields, err := objectFields(payload)
	if err != nil {
		return a, fmt.Errorf("%w: the payload %v", ErrInvalidInput, err)
	}
	bad := func(field, format string, args ...any) error {
		return fmt.Errorf("%w: %s %s", ErrInvalidInput, field, fmt.Sprintf(format, args...))
	}
	for _, field := range []string{"rowId", "bucketId", "userId", "userEmail", "armedExpiresAt"} {
		if problem := jsonTextProblem(fields[field]); problem != "" {
			return a, bad(field, "%s", problem)
		}
	}
	if err := json.Unmarshal(payload, &a.ArmExpiryInput); err != nil {
		return a, fmt.Errorf("%w: %v", ErrInvalidInput, err)
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
	switch {
	case err != nil:
		return a, bad("armedExpiresAt", "%q is not an RFC 3339 time", a.ArmedExpiresAt)
	case t.Year() < 1:
		return a, bad("armedExpiresAt", "%q is before the year 1, which Postgres does not store", a.ArmedExpiresAt)
	}
	a.ExpiresAt = t
	return a, nil
}

// timer is the expiry timer the payload arms.
func (a ArmedExpiry) timer() db.ExpiryTimer {
	t := db.ExpiryTimer{RowID: a.RowID, FiresAt: a.ExpiresAt, BucketID: a.BucketID, UserID: a.UserID}
	if a.UserEmail != "" {
		t.UserEmail = &a.UserEmail
	}
	return t
}

// HandleArm is bucket-expiry, run for each bucket:arm-expiry push. A join
// arms its member's timer in its own transaction, so for the worker's own
// pushes this only confirms it; an arm pushed by another producer is armed
// here. A timer already due fires at once; the others fire at their
// deadline in a running worker (RunTimers), however long the window.
func HandleArm(ctx context.Context, d *Deps, a ArmedExpiry) (ExpiryResult, error) {
	if d.Now().After(a.ExpiresAt) {
		return Expire(ctx, d, a)
	}
	if err := db.ArmTimers(ctx, d.DB, []db.ExpiryTimer{a.timer()}); err != nil {
		return ExpiryResult{}, err
	}
	return ExpiryResult{Status: StatusArmed, RowID: a.RowID, FiresAt: &a.ExpiresAt}, nil
}

// Expire fires one timer now, whatever its deadline — what a timer does at
// its deadline (contract §10): unless the bucket is gone or off, the user
// erased, or the criteria still hold, it leaves the armed membership, if
// it is still the one armed with the same expires_at. It runs in one
// transaction, which disarms the timer.
func Expire(ctx context.Context, d *Deps, a ArmedExpiry) (ExpiryResult, error) {
	on, err := switchedOnIDs(ctx, d, []string{a.BucketID})
	if err != nil {
		return ExpiryResult{}, err
	}
	var res []ExpiryResult
	_, err = d.transact(ctx, d.Now(), func(ctx context.Context, t *txn) error {
		if err := db.DisarmTimer(ctx, t.tx, a.RowID, a.ExpiresAt); err != nil {
			return err
		}
		var err error
		res, err = t.fireTimers(ctx, []db.ExpiryTimer{a.timer()}, on)
		return err
	})
	if err != nil {
		return ExpiryResult{}, fmt.Errorf("expiring membership %s of bucket %q: %w", a.RowID, a.BucketID, err)
	}
	return res[0], nil
}

// FireDueTimers claims the timers due now, ExpiryBatch per transaction,
// and fires them, until none is due; it returns how many it fired.
// Replicas running it at once share the timers.
func FireDueTimers(ctx context.Context, d *Deps) (int, error) {
	ids := make([]string, 0, d.Buckets.Len())
	for _, b := range d.Buckets.All() {
		ids = append(ids, b.ID)
	}
	on, err := switchedOnIDs(ctx, d, ids)
	if err != nil {
		return 0, err
	}
	fired := 0
	for {
		var timers []db.ExpiryTimer
		now := d.Now()
		out, err := d.transact(ctx, now, func(ctx context.Context, t *txn) error {
			var err error
			if timers, err = db.ClaimDueTimers(ctx, t.tx, t.now, ExpiryBatch); err != nil {
				return err
			}
			_, err = t.fireTimers(ctx, timers, on)
			return err
		})
		if err != nil {
			return fired, fmt.Errorf("firing expiry timers: %w", err)
		}
		d.Metrics.timersFired(timers, now)
		claimed := len(timers)
		fired += claimed
		if len(out.Transitions) > 0 {
			d.Logger.InfoContext(ctx, "expiry timers fired", slog.Int("timers", claimed), slog.Int("left", len(out.Transitions)))
		}
		if claimed < ExpiryBatch {
			return fired, nil
		}
	}
}

// RunTimers fires the due expiry timers every interval until ctx ends. A
// failed round is logged; its timers stay armed for the next one.
func RunTimers(ctx context.Context, d *Deps, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if _, err := FireDueTimers(ctx, d); err != nil && ctx.Err() == nil {
			d.Logger.WarnContext(ctx, "firing expiry timers", slog.Any("error", err))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// fireTimers fires the timers inside tx, in the order of contract §10 for
// each: bucket unknown or off, user erased, criteria holding again, row
// re-armed or left — or else the leave, by the funnel. The memberships are
// locked before the criteria are read (contract §5.3), so a member who
// qualified again while the timer waited stays. on holds the runtime
// switch of the buckets, read before the transaction.
func (t *txn) fireTimers(ctx context.Context, timers []db.ExpiryTimer, on map[string]bool) ([]ExpiryResult, error) {
	results := make([]ExpiryResult, len(timers))
	byBucket := map[string][]int{}
	for i, timer := range timers {
		byBucket[timer.BucketID] = append(byBucket[timer.BucketID], i)
	}
	for _, bucketID := range slices.Sorted(maps.Keys(byBucket)) {
		group := byBucket[bucketID]
		b, ok := t.d.Buckets.Get(bucketID)
		skip := ""
		switch {
		case !ok || b.Criteria == nil:
			skip = ReasonBucketUnregistered
		case !on[bucketID]:
			skip = ReasonBucketDisabled
		}
		if skip != "" {
			for _, i := range group {
				results[i] = ExpiryResult{Status: StatusSkipped, Reason: skip}
			}
			continue
		}
		rowIDs, users := make([]string, len(group)), make([]string, len(group))
		for k, i := range group {
			rowIDs[k], users[k] = timers[i].RowID, timers[i].UserID
		}
		locked, err := db.LockMemberships(ctx, t.tx, rowIDs)
		if err != nil {
			return nil, err
		}
		rows := make(map[string]db.Membership, len(locked))
		for _, m := range locked {
			rows[m.ID] = m
		}
		erased, err := db.ErasedUsers(ctx, t.tx, users)
		if err != nil {
			return nil, err
		}
		holds, err := db.EvaluateUsers(ctx, t.tx, b.Criteria, t.now, users)
		if err != nil {
			return nil, err
		}
		var leavers []db.Membership
		var leaving []int // the timers whose member leaves below
		armed := map[string]time.Time{}
		for _, i := range group {
			timer := timers[i]
			m, active := rows[timer.RowID]
			switch {
			case erased[timer.UserID]:
				results[i] = ExpiryResult{Status: StatusSkipped, Reason: ReasonContactDeleted}
			case holds[timer.UserID]:
				results[i] = ExpiryResult{Status: StatusSkipped, Reason: ReasonStillMember}
			case !active || m.BucketID != b.ID || m.UserID != timer.UserID || m.ExpiresAt == nil || !m.ExpiresAt.Equal(timer.FiresAt):
				results[i] = ExpiryResult{Status: StatusSkipped, Reason: ReasonReArmed}
			default:
				leavers = append(leavers, m)
				leaving = append(leaving, i)
				armed[m.ID] = timer.FiresAt
			}
		}
		step, err := t.leave(ctx, b, leavers, leaveSpec{Source: SourceReconcile, Reason: ReasonCriteria, Unless: b.Criteria, Armed: armed})
		if err != nil {
			return nil, err
		}
		left := map[string]bool{}
		for _, tr := range step {
			left[tr.RowID] = true
		}
		for _, i := range leaving {
			m := rows[timers[i].RowID]
			switch {
			case left[m.ID]:
				results[i] = ExpiryResult{Status: StatusLeft, RowID: m.ID}
			case heldByMinDwell(b, m.EnteredAt, t.now):
				results[i] = ExpiryResult{Status: StatusDeferred, RowID: m.ID}
			default: // the CAS missed
				results[i] = ExpiryResult{Status: StatusSkipped, Reason: ReasonReArmed}
			}
		}
	}
	return results, nil
}
