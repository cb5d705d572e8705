package tasks

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/uptrace/bun"

	"github.com/bucketworker/bucket-worker/buckets"
	"github.com/bucketworker/bucket-worker/db"
)

// The two transitions, and the paths a transition comes from (contract §5.1).
const (
	Entered = "entered"
	Left    = "left"

	SourceEvent     = "event"     // the real-time path
	SourceReconcile = "reconcile" // the cron sweep and the expiry timer
	SourceBackfill  = "backfill"

	ReasonCriteria = "criteria"
	ReasonMaxDwell = "maxDwell"
)

// Transition is one committed join or leave.
type Transition struct {
	BucketID   string `json:"bucketId"`
	UserID     string `json:"userId"`
	Transition string `json:"transition"`
	// Epoch is the membership's entry_count.
	Epoch int `json:"entryCount"`
	// Suppressed is true for a join the entry limit kept silent.
	Suppressed bool   `json:"suppressed,omitempty"`
	RowID      string `json:"-"`
}

// Outcome is what the transitions of one transaction did. After the
// transaction commits, pass it to Deps.afterCommit.
type Outcome struct {
	Transitions []Transition
	// Deferred counts leaves postponed by minDwell.
	Deferred int
	// Exited are the journey runs the emitted events ended.
	Exited []db.JourneyState
	// Pushes counts the outbox rows the transaction wrote.
	Pushes int
	// Dispatched counts the pushes afterCommit sent inline.
	Dispatched int
}

func (o *Outcome) add(other Outcome) {
	o.Transitions = append(o.Transitions, other.Transitions...)
	o.Deferred += other.Deferred
	o.Exited = append(o.Exited, other.Exited...)
	o.Pushes += other.Pushes
	o.Dispatched += other.Dispatched
}

// joinSpec says where joins come from and how they are made.
type joinSpec struct {
	Source string
	// Recheck re-evaluates the criteria in the INSERT, for joiners chosen
	// outside the joining transaction.
	Recheck bool
	// Silent writes the membership without emitting bucket:entered: a
	// backfill materializes historical matches, which must not fire
	// journeys (contract §8). Expiry timers are still armed.
	Silent bool
}

// join is the join of contract §5.4 for a batch of users, inside the
// caller's transaction: it inserts the rows, gates the emission by the
// entry limit, emits, and arms expiry timers. Users who are already active
// members are skipped without a transition.
func join(ctx context.Context, tx bun.IDB, d *Deps, b *buckets.Bucket, users []db.Joiner, js joinSpec, now time.Time) (Outcome, error) {
	spec := db.NewMemberships{BucketID: b.ID, Source: js.Source, Now: now, Users: users}
	if js.Recheck {
		spec.If = b.Criteria
	}
	if (b.TimeBased || b.FastExpiry) && !b.ExpiryWindow.IsZero() {
		spec.ExpiresAt = ptr(now.Add(b.ExpiryWindow.Std()))
	}
	spec.DateExpiry = b.DateExpiry
	if !b.MaxDwell.IsZero() {
		spec.MaxDwellAt = ptr(now.Add(b.MaxDwell.Std()))
	}
	if js.Recheck {
		// The joiners were chosen on an earlier snapshot: wait for the
		// ingests that hold their contacts, so the re-check sees what they
		// stored (contract §5.3).
		ids := make([]string, len(users))
		for i, u := range users {
			ids[i] = u.UserID
		}
		if err := db.LockContacts(ctx, tx, ids); err != nil {
			return Outcome{}, err
		}
	}
	rows, err := db.JoinMemberships(ctx, tx, spec)
	if err != nil || len(rows) == 0 {
		return Outcome{}, err
	}

	var lastLeft map[string]time.Time
	if !js.Silent && b.EntryLimit == buckets.EntryOncePerPeriod && !b.EntryPeriod.IsZero() {
		var again []string
		for _, r := range rows {
			if r.EntryCount > 1 {
				again = append(again, r.UserID)
			}
		}
		if len(again) > 0 {
			if lastLeft, err = db.LastLeftAt(ctx, tx, b.ID, again); err != nil {
				return Outcome{}, err
			}
		}
	}

	var out Outcome
	emissions := transitionBatch(b, Entered, js.Source, "")
	var arms []db.OutboxEvent
	var timers []db.ExpiryTimer
	for _, r := range rows {
		email := deref(r.UserEmail)
		left, hasLeft := lastLeft[r.UserID]
		suppressed := js.Silent || !entryEmits(b, r.EntryCount, left, hasLeft, now)
		if !suppressed {
			emissions.Events = append(emissions.Events, transitionEvents(d, b, Entered, r.UserID, email, r.EntryCount)...)
		}
		if b.ArmsExpiry && r.ExpiresAt != nil {
			arm, err := armExpiry(b, r, now)
			if err != nil {
				return Outcome{}, err
			}
			arms = append(arms, arm)
			timers = append(timers, db.ExpiryTimer{RowID: r.ID, FiresAt: *r.ExpiresAt, BucketID: b.ID, UserID: r.UserID, UserEmail: r.UserEmail})
		}
		out.Transitions = append(out.Transitions, Transition{
			BucketID: b.ID, UserID: r.UserID, Transition: Entered, Epoch: r.EntryCount, Suppressed: suppressed, RowID: r.ID,
		})
	}
	if out.Exited, out.Pushes, err = emit(ctx, tx, d, emissions, now); err != nil {
		return Outcome{}, err
	}
	if err := db.ArmTimers(ctx, tx, timers); err != nil {
		return Outcome{}, err
	}
	if err := db.InsertOutbox(ctx, tx, arms); err != nil {
		return Outcome{}, err
	}
	out.Pushes += len(arms)
	return out, nil
}

// entryEmits is the entry-limit gate of contract §5.4 step 4: whether the
// join with this epoch emits bucket:entered. lastLeft is when the user's
// latest earlier membership ended, when hasLeft.
func entryEmits(b *buckets.Bucket, epoch int, lastLeft time.Time, hasLeft bool, now time.Time) bool {
	if epoch == 1 {
		return true
	}
	switch b.EntryLimit {
	case buckets.EntryOnce:
		return false
	case buckets.EntryOncePerPeriod:
		if b.EntryPeriod.IsZero() || !hasLeft {
			return true
		}
		return now.Sub(lastLeft) >= b.EntryPeriod.Std()
	}
	return true
}

// leaveSpec says why and how members leave.
type leaveSpec struct {
	Source string
	Reason string
	// Unless, when set, re-checks the criteria in the CAS so that a member
	// who qualifies again by the time of the UPDATE stays.
	Unless buckets.Condition
	// Armed, when set, holds the expires_at each member's expiry timer was
	// armed with: the timer's CAS, which a re-armed or deferred row misses.
	Armed map[string]time.Time
}

// leave is the leave of contract §5.5 for a batch of active memberships,
// inside the caller's transaction. It first locks the rows (contract §5.3):
// a concurrent path that decided about the same member has then committed,
// and the statements after the lock see it. Members still inside minDwell
// are deferred, the others are left by a CAS on their row id that
// re-checks spec.Unless, and emitted with their own epoch. Rows another
// writer ended or replaced are skipped.
func leave(ctx context.Context, tx bun.IDB, d *Deps, b *buckets.Bucket, members []db.Membership, spec leaveSpec, now time.Time) (Outcome, error) {
	ids := make([]string, len(members))
	for i, m := range members {
		ids[i] = m.ID
	}
	locked, err := db.LockMemberships(ctx, tx, ids)
	if err != nil {
		return Outcome{}, err
	}
	var going, deferred []string
	for _, m := range locked {
		if heldByMinDwell(b, m.EnteredAt, now) {
			deferred = append(deferred, m.ID)
		} else {
			going = append(going, m.ID)
		}
	}
	var out Outcome
	if out.Deferred, err = db.DeferLeaves(ctx, tx, deferred, b.MinDwell.Std(), spec.Unless, now); err != nil {
		return Outcome{}, err
	}
	if len(going) == 0 {
		return out, nil
	}
	cas := db.LeaveCAS{IDs: going, Now: now, Unless: spec.Unless}
	if spec.Armed != nil {
		cas.Armed = make([]time.Time, len(going))
		for i, id := range going {
			cas.Armed[i] = spec.Armed[id]
		}
	}
	rows, err := db.LeaveMemberships(ctx, tx, cas)
	if err != nil {
		return Outcome{}, err
	}
	emissions := transitionBatch(b, Left, spec.Source, spec.Reason)
	for _, r := range rows {
		emissions.Events = append(emissions.Events, transitionEvents(d, b, Left, r.UserID, deref(r.UserEmail), r.EntryCount)...)
		out.Transitions = append(out.Transitions, Transition{BucketID: b.ID, UserID: r.UserID, Transition: Left, Epoch: r.EntryCount, RowID: r.ID})
	}
	if out.Exited, out.Pushes, err = emit(ctx, tx, d, emissions, now); err != nil {
		return Outcome{}, err
	}
	return out, nil
}

// heldByMinDwell reports whether a member who entered at enteredAt is still
// inside the bucket's minimum dwell at now: a leave then is deferred
// (contract §5.5 step 1).
func heldByMinDwell(b *buckets.Bucket, enteredAt, now time.Time) bool {
	return !b.MinDwell.IsZero() && now.Sub(enteredAt) < b.MinDwell.Std()
}

// transitionBatch is an empty batch of the events of one kind of
// transition of the bucket.
func transitionBatch(b *buckets.Bucket, transition, source, reason string) db.Emissions {
	return db.Emissions{BucketID: b.ID, BucketName: b.Name, Transition: transition, Source: source, Reason: reason}
}

// transitionEvents returns the events of one transition (contract §5.1):
// bucket:<transition>:<id>, and the generic bucket:<transition> when a
// journey is triggered by it.
func transitionEvents(d *Deps, b *buckets.Bucket, transition, userID, email string, epoch int) []db.Emission {
	own := db.Emission{
		Event:          "bucket:" + transition + ":" + b.ID,
		IdempotencyKey: fmt.Sprintf("bucket:%s:%s:%s:%d", b.ID, userID, transition, epoch),
		UserID:         userID,
		UserEmail:      email,
		EntryCount:     epoch,
	}
	out := []db.Emission{own}
	if generic := "bucket:" + transition; d.Journeys.Binds(generic) {
		g := own
		g.Event, g.IdempotencyKey = generic, own.IdempotencyKey+":generic"
		out = append(out, g)
	}
	return out
}

// emit stores the events in user_events, enqueues a push for each one not
// stored before, and exits the journeys the stored ones end (contract §5.2
// step 1 and §5.6), all in the caller's transaction. It returns the exited
// journey runs and how many pushes it enqueued.
func emit(ctx context.Context, tx bun.IDB, d *Deps, emissions db.Emissions, now time.Time) ([]db.JourneyState, int, error) {
	if len(emissions.Events) == 0 {
		return nil, 0, nil
	}
	stored, err := db.InsertEmissions(ctx, tx, emissions, now)
	if err != nil {
		return nil, 0, err
	}

	exits := journeyExits{}
	for _, e := range emissions.Events {
		if stored[e.IdempotencyKey] { // else emitted before
			exits.add(d.Journeys.ExitingOn(e.Event, emissions.Properties(e)), e.UserID)
		}
	}
	exited, err := exits.apply(ctx, tx, now)
	return exited, len(stored), err
}

// journeyExits groups users by the journeys that events of theirs exit, so
// that each group is one statement: journey ids joined by "\x00" → users.
type journeyExits map[string][]string

func (x journeyExits) add(journeyIDs []string, userID string) {
	if len(journeyIDs) > 0 {
		group := strings.Join(journeyIDs, "\x00")
		x[group] = append(x[group], userID)
	}
}

// apply exits the groups' journeys (contract §5.6) and returns the runs
// it exited.
func (x journeyExits) apply(ctx context.Context, tx bun.IDB, now time.Time) ([]db.JourneyState, error) {
	var exited []db.JourneyState
	for _, group := range slices.Sorted(maps.Keys(x)) {
		rows, err := db.ExitJourneys(ctx, tx, x[group], strings.Split(group, "\x00"), now)
		if err != nil {
			return nil, err
		}
		exited = append(exited, rows...)
	}
	return exited, nil
}

// armExpiry is the push that announces the expiry timer of a new
// membership (contract §5.4 step 5). armedExpiresAt is the stored value.
func armExpiry(b *buckets.Bucket, m db.Membership, now time.Time) (db.OutboxEvent, error) {
	key := "arm:" + m.ID
	payload, err := json.Marshal(ArmExpiryInput{
		RowID:          m.ID,
		BucketID:       b.ID,
		UserID:         m.UserID,
		UserEmail:      deref(m.UserEmail),
		ArmedExpiresAt: m.ExpiresAt.UTC().Format(ArmedTimeFormat),
		MsUntilExpiry:  m.ExpiresAt.Sub(now).Milliseconds(),
	})
	if err != nil {
		return db.OutboxEvent{}, fmt.Errorf("encoding the arm of membership %s: %w", m.ID, err)
	}
	meta, err := json.Marshal(map[string]string{"bucketId": b.ID, "userId": m.UserID, "idempotencyKey": key})
	if err != nil {
		return db.OutboxEvent{}, fmt.Errorf("encoding the arm of membership %s: %w", m.ID, err)
	}
	return db.OutboxEvent{EventKey: ArmExpiryEvent, Payload: payload, AdditionalMetadata: meta,
		IdempotencyKey: &key, CreatedAt: now, AvailableAt: now}, nil
}

// transact runs one batch of transitions in a transaction and, once it
// committed, does what the outcome leaves to do (Deps.afterCommit). A
// transaction that Postgres aborted to break a deadlock between two paths
// locking the same users (contract §5.3) is run again.
func transact(ctx context.Context, d *Deps, fn func(ctx context.Context, tx bun.Tx) (Outcome, error)) (Outcome, error) {
	var out Outcome
	for attempt := 1; ; attempt++ {
		err := d.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
			var err error
			out, err = fn(ctx, tx)
			return err
		})
		if err == nil {
			break
		}
		if !db.IsDeadlock(err) || attempt == deadlockAttempts {
			return Outcome{}, err
		}
		d.Logger.WarnContext(ctx, "transaction aborted by a deadlock, running it again", slog.Int("attempt", attempt), slog.Any("error", err))
	}
	d.afterCommit(ctx, &out)
	return out, nil
}

// deadlockAttempts is how often transact runs a transaction that keeps
// being chosen as a deadlock's victim.
const deadlockAttempts = 5

// afterCommit does what a committed transaction leaves to do, for every
// path in one place: send the pushes it enqueued (out.Dispatched counts
// those sent inline) and cancel the Hatchet runs of the journeys it
// exited, best effort.
func (d *Deps) afterCommit(ctx context.Context, out *Outcome) {
	if out.Pushes > 0 && d.Dispatcher != nil {
		out.Dispatched = d.Dispatcher.notify(ctx)
	}
	var runs []string
	for _, s := range out.Exited {
		if s.HatchetRunID != nil && *s.HatchetRunID != "" {
			runs = append(runs, *s.HatchetRunID)
		}
	}
	if len(runs) == 0 || d.Hatchet == nil {
		return
	}
	if err := d.Hatchet.CancelRuns(ctx, runs); err != nil {
		d.Logger.WarnContext(ctx, "cancelling the runs of exited journeys", slog.Int("runs", len(runs)), slog.Any("error", err))
	}
}
