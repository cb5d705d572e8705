package tasks

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/uptrace/bun"

	"github.com/bucketworker/bucket-worker/buckets"
	"github.com/bucketworker/bucket-worker/db"
	"github.com/bucketworker/bucket-worker/journeys"
)

// TransitionKind is a join or a leave (contract §5.1), or the fire of a
// dwell schedule (§14), which changes no membership.
type TransitionKind string

// The transitions.
const (
	Entered TransitionKind = "entered"
	Left    TransitionKind = "left"
	Dwell   TransitionKind = "dwell"
)

// Source is the path a transition comes from (contract §5.1).
type Source string

// The sources of transitions.
const (
	SourceEvent     Source = "event"     // the real-time path
	SourceReconcile Source = "reconcile" // the cron sweep and the expiry timer
	SourceBackfill  Source = "backfill"
)

// LeaveReason says why a member left (contract §5.1).
type LeaveReason string

// The reasons of a leave.
const (
	ReasonCriteria LeaveReason = "criteria"
	ReasonMaxDwell LeaveReason = "maxDwell"
)

// Transition is one committed join or leave.
type Transition struct {
	BucketID   string         `json:"bucketId"`
	UserID     string         `json:"userId"`
	Transition TransitionKind `json:"transition"`
	// Epoch is the membership's entry_count.
	Epoch int `json:"entryCount"`
	// Suppressed is true for a join the entry limit kept silent.
	Suppressed bool `json:"suppressed,omitempty"`
	// DwellCount is a dwell fire's ordinal.
	DwellCount int    `json:"dwellCount,omitempty"`
	Source     Source `json:"-"`
	RowID      string `json:"-"`
}

// Outcome is what the transitions of one transaction did.
type Outcome struct {
	Transitions []Transition
	// Deferred counts leaves postponed by minDwell.
	Deferred int
	// Exited are the journey runs the transaction ended: those of the
	// events it ingested, then those of the transitions it emitted.
	Exited []db.JourneyState
	// Pushes counts the outbox rows the transaction wrote, and
	// Deliveries the deliveries to the other destinations (contract §15).
	Pushes     int
	Deliveries int
	// Dispatched counts the pushes sent inline once it committed, and
	// Delivered the deliveries.
	Dispatched int
	Delivered  int
}

// of counts the transitions of the bucket; the others were cascaded
// (contract §13).
func (o Outcome) of(bucketID string) int {
	n := 0
	for _, tr := range o.Transitions {
		if tr.BucketID == bucketID {
			n++
		}
	}
	return n
}

// txn is one transaction of the engine: the transaction itself, the
// instant every decision in it is taken at, the engine's dependencies, and
// the outcome its transitions add up to. Every path that changes a
// membership does so through a txn's join and leave — the one funnel of
// contract §5 — inside Deps.transact.
type txn struct {
	tx  bun.Tx
	d   *Deps
	now time.Time
	out Outcome
	// locked are the users whose locks the transaction holds (lockUsers).
	locked map[string]bool
	// emails are the emails of the memberships that moved, by user.
	emails map[string]string
	// cascaded are the (bucket, user) pairs a cascade decided. A bucket
	// is cascaded into after every move of a bucket it reads, so a later
	// evaluation of the pair in the transaction would read the same rows
	// and decide the same: an ingest round skips it.
	cascaded map[[2]string]bool
}

// lockUsers takes the locks of the users the transaction does not hold
// yet (db.LockUsers): every path that can create a contact or a
// membership takes them, so that an erasure waits for it and it for an
// erasure (contract §5.3).
func (t *txn) lockUsers(ctx context.Context, users []string) error {
	var more []string
	for _, u := range users {
		if !t.locked[u] {
			more = append(more, u)
		}
	}
	if len(more) == 0 {
		return nil
	}
	if err := db.LockUsers(ctx, t.tx, more); err != nil {
		return err
	}
	if t.locked == nil {
		t.locked = map[string]bool{}
	}
	for _, u := range more {
		t.locked[u] = true
	}
	return nil
}

// transact runs fn in one transaction whose decisions are taken at now
// and, once it committed, does what its outcome leaves to do
// (Deps.afterCommit). A transaction that Postgres aborted to break a
// deadlock between two paths locking the same users (contract §5.3) is run
// again, from a fresh outcome.
func (d *Deps) transact(ctx context.Context, now time.Time, fn func(ctx context.Context, t *txn) error) (Outcome, error) {
	var t *txn
	for attempt := 1; ; attempt++ {
		err := d.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
			t = &txn{tx: tx, d: d, now: now}
			return fn(ctx, t)
		})
		if err == nil {
			break
		}
		if !db.IsDeadlock(err) || attempt == deadlockAttempts {
			return Outcome{}, err
		}
		d.Logger.WarnContext(ctx, "transaction aborted by a deadlock, running it again", slog.Int("attempt", attempt), slog.Any("error", err))
	}
	d.afterCommit(ctx, &t.out)
	return t.out, nil
}

// deadlockAttempts is how often transact runs a transaction that keeps
// being chosen as a deadlock's victim.
const deadlockAttempts = 5

// afterCommit does what a committed transaction leaves to do, for every
// path in one place: count its transitions (Metrics), send the pushes and
// the deliveries it queued (out.Dispatched and out.Delivered count those
// sent inline) and cancel the Hatchet runs of the journeys it exited, best
// effort.
func (d *Deps) afterCommit(ctx context.Context, out *Outcome) {
	d.Metrics.committed(out.Transitions)
	if out.Pushes > 0 && d.Dispatcher != nil {
		out.Dispatched = d.Dispatcher.notify(ctx)
	}
	if out.Deliveries > 0 {
		for _, p := range d.Deliverers {
			out.Delivered += p.notify(ctx)
		}
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

// joinSpec says where joins come from and how they are made.
type joinSpec struct {
	Source Source
	// Recheck re-evaluates the criteria in the INSERT, for joiners chosen
	// from contacts outside the joining transaction, who must still have
	// a live contact.
	Recheck bool
	// Decide evaluates the criteria in the INSERT, for users not decided
	// yet (txn.decide): those for whom they hold join, the others are left
	// out.
	Decide bool
	// Silent writes the membership without emitting bucket:entered: a
	// backfill materializes historical matches, which must not fire
	// journeys (contract §8). Expiry timers are still armed.
	Silent bool
	// Dated dates the dwell clock of each membership by the criteria,
	// where they say when it began (Bucket.QuietLeg): a backfill's
	// members were members before it found them (contract §14).
	Dated bool
}

// join is the join of contract §5.4 for a batch of users: it inserts the
// rows, gates the emission by the entry limit, emits, and arms expiry
// timers. Users who are already active members are skipped without a
// transition. It returns the joins it made, which it adds to the outcome.
func (t *txn) join(ctx context.Context, b *buckets.Bucket, users []db.Joiner, js joinSpec) ([]Transition, error) {
	if len(users) == 0 {
		return nil, nil
	}
	spec := db.NewMemberships{BucketID: b.ID, Source: string(js.Source), Now: t.now, Users: users, DateExpiry: b.DateExpiry}
	if js.Recheck || js.Decide {
		spec.If, spec.LiveContact = b.Criteria, js.Recheck
	}
	if js.Dated {
		spec.QuietSince = b.QuietLeg()
	}
	if (b.TimeBased || b.FastExpiry) && !b.ExpiryWindow.IsZero() {
		spec.ExpiresAt = ptr(t.now.Add(b.ExpiryWindow.Std()))
	}
	if !b.MaxDwell.IsZero() {
		spec.MaxDwellAt = ptr(t.now.Add(b.MaxDwell.Std()))
	}
	// The joiners' locks, which an erasure takes too: the insert sees an
	// erasure that committed, and one to come waits for this join.
	ids := make([]string, len(users))
	for i, u := range users {
		ids[i] = u.UserID
	}
	if err := t.lockUsers(ctx, ids); err != nil {
		return nil, err
	}
	if js.Recheck {
		// The joiners were chosen from live contacts on an earlier
		// snapshot: wait for the ingests that hold their contacts, so the
		// re-check sees what they stored (contract §5.3).
		if err := db.LockContacts(ctx, t.tx, ids); err != nil {
			return nil, err
		}
	}
	rows, err := db.JoinMemberships(ctx, t.tx, t.d.Schema, spec)
	if err != nil || len(rows) == 0 {
		return nil, err
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
			if lastLeft, err = db.LastLeftAt(ctx, t.tx, b.ID, again); err != nil {
				return nil, err
			}
		}
	}

	var joined []Transition
	emissions := transitionBatch(b, Entered, js.Source, "")
	var arms []db.OutboxEvent
	var timers []db.ExpiryTimer
	moved := make([]delivered, 0, len(rows))
	for _, r := range rows {
		left, hasLeft := lastLeft[r.UserID]
		suppressed := js.Silent || !entryEmits(b, r.EntryCount, left, hasLeft, t.now)
		if !suppressed {
			emissions.Events = append(emissions.Events, t.transitionEvents(b, Entered, r.UserID, deref(r.UserEmail), r.EntryCount)...)
		}
		moved = append(moved, delivered{kind: Entered, source: js.Source, at: t.now, userID: r.UserID,
			email: deref(r.UserEmail), epoch: r.EntryCount, emitted: !suppressed})
		if b.ArmsExpiry && r.ExpiresAt != nil {
			arm, err := armExpiry(b, r, t.now)
			if err != nil {
				return nil, err
			}
			arms = append(arms, arm)
			timers = append(timers, db.ExpiryTimer{RowID: r.ID, FiresAt: *r.ExpiresAt, BucketID: b.ID, UserID: r.UserID, UserEmail: r.UserEmail})
		}
		joined = append(joined, Transition{
			BucketID: b.ID, UserID: r.UserID, Transition: Entered, Epoch: r.EntryCount, Suppressed: suppressed, Source: js.Source, RowID: r.ID,
		})
		t.remember(r)
	}
	if err := t.emit(ctx, emissions); err != nil {
		return nil, err
	}
	if err := t.deliver(ctx, b, moved); err != nil {
		return nil, err
	}
	if err := db.ArmTimers(ctx, t.tx, timers); err != nil {
		return nil, err
	}
	if err := db.InsertOutbox(ctx, t.tx, arms); err != nil {
		return nil, err
	}
	t.out.Pushes += len(arms)
	t.out.Transitions = append(t.out.Transitions, joined...)
	// A silent join cascades silently: a backfill's historical joins
	// start no journey, here or downstream.
	return joined, t.cascade(ctx, b, joined, js.Source, js.Silent)
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
	Source Source
	Reason LeaveReason
	// Unless, when set, re-checks the criteria in the CAS so that a member
	// who qualifies again by the time of the UPDATE stays.
	Unless buckets.Condition
	// Armed, when set, holds the expires_at each member's expiry timer was
	// armed with: the timer's CAS, which a re-armed or deferred row misses.
	Armed map[string]time.Time
}

// leave is the leave of contract §5.5 for a batch of active memberships.
// It first locks the rows (contract §5.3): a concurrent path that decided
// about the same member has then committed, and the statements after the
// lock see it. Members still inside minDwell are deferred, the others are
// left by a CAS on their row id that re-checks spec.Unless, and emitted
// with their own epoch. Rows another writer ended or replaced are skipped.
// It returns the leaves it made, which it adds to the outcome with the
// deferred ones.
func (t *txn) leave(ctx context.Context, b *buckets.Bucket, members []db.Membership, spec leaveSpec) ([]Transition, error) {
	if len(members) == 0 {
		return nil, nil
	}
	ids := make([]string, len(members))
	for i, m := range members {
		ids[i] = m.ID
	}
	locked, err := db.LockMemberships(ctx, t.tx, ids)
	if err != nil {
		return nil, err
	}
	var going, deferred []string
	for _, m := range locked {
		if heldByMinDwell(b, m.EnteredAt, t.now) {
			deferred = append(deferred, m.ID)
		} else {
			going = append(going, m.ID)
		}
	}
	n, err := db.DeferLeaves(ctx, t.tx, deferred, b.MinDwell.Std(), spec.Unless, t.now)
	if err != nil {
		return nil, err
	}
	t.out.Deferred += n
	if len(going) == 0 {
		return nil, nil
	}
	cas := db.LeaveCAS{IDs: going, Now: t.now, Unless: spec.Unless}
	if spec.Armed != nil {
		cas.Armed = make([]time.Time, len(going))
		for i, id := range going {
			cas.Armed[i] = spec.Armed[id]
		}
	}
	rows, err := db.LeaveMemberships(ctx, t.tx, cas)
	if err != nil {
		return nil, err
	}
	var left []Transition
	emissions := transitionBatch(b, Left, spec.Source, spec.Reason)
	moved := make([]delivered, len(rows))
	for i, r := range rows {
		emissions.Events = append(emissions.Events, t.transitionEvents(b, Left, r.UserID, deref(r.UserEmail), r.EntryCount)...)
		left = append(left, Transition{BucketID: b.ID, UserID: r.UserID, Transition: Left, Epoch: r.EntryCount, Source: spec.Source, RowID: r.ID})
		moved[i] = delivered{kind: Left, source: spec.Source, reason: spec.Reason, at: t.now, userID: r.UserID,
			email: deref(r.UserEmail), epoch: r.EntryCount, emitted: true}
		t.remember(r)
	}
	if err := t.emit(ctx, emissions); err != nil {
		return nil, err
	}
	if err := t.deliver(ctx, b, moved); err != nil {
		return nil, err
	}
	t.out.Transitions = append(t.out.Transitions, left...)
	return left, t.cascade(ctx, b, left, spec.Source, false)
}

// fireDwell is the dwell fire of contract §14 for the memberships of the
// ids: it stamps those still active and due at the pass's instant and
// emits bucket:dwell:<id>:<label> for each, in the transaction, so that a
// fire and its stamp commit together or not at all. A fire changes no
// membership and cascades nowhere. It returns the fires, which it adds to
// the outcome.
func (t *txn) fireDwell(ctx context.Context, b *buckets.Bucket, pass db.DwellPass, ids []string) ([]Transition, error) {
	fires, err := db.StampDwell(ctx, t.tx, pass, ids)
	if err != nil || len(fires) == 0 {
		return nil, err
	}
	emissions := transitionBatch(b, Dwell, SourceReconcile, "")
	fired := make([]Transition, len(fires))
	for i, f := range fires {
		ordinal := 1
		if pass.Every > 0 {
			// Counted from the clock, not from the last fire: a sweep that
			// comes late fires once, with the ordinal the clock has reached.
			ordinal = int(pass.Now.Sub(f.Clock) / pass.Every)
		}
		emissions.Events = append(emissions.Events, db.Emission{
			Event:          journeys.DwellEvent(b.ID, pass.Label),
			IdempotencyKey: dwellKey(b.ID, f.UserID, pass.Label, ordinal, f.EntryCount),
			UserID:         f.UserID,
			UserEmail:      deref(f.UserEmail),
			EntryCount:     f.EntryCount,
			DwellCount:     ordinal,
		})
		fired[i] = Transition{BucketID: b.ID, UserID: f.UserID, Transition: Dwell, Epoch: f.EntryCount, DwellCount: ordinal, Source: SourceReconcile, RowID: f.ID}
	}
	if err := t.emit(ctx, emissions); err != nil {
		return nil, err
	}
	t.out.Transitions = append(t.out.Transitions, fired...)
	return fired, nil
}

// dwellKey is the idempotency key of a dwell fire (contract §14):
// Hogsend's bucket:<id>:<user>:dwell:<label>:<ordinal> for a first
// membership, and the epoch after it from the second on, so that a
// re-joined member's fires are not taken for the first membership's.
func dwellKey(bucketID, userID, label string, ordinal, epoch int) string {
	key := fmt.Sprintf("bucket:%s:%s:dwell:%s:%d", bucketID, userID, label, ordinal)
	if epoch > 1 {
		key += ":" + strconv.Itoa(epoch)
	}
	return key
}

// cascade re-evaluates, in the transaction of the transitions of bucket
// from, every bucket whose criteria read from (contract §13) for the users
// that moved, and joins and leaves them through the funnel with the source
// of the transitions that caused it — which cascades in turn, down the
// graph. The dependents go in dependency order, so that a bucket reading
// two that moved reads both moved; a runtime-disabled one is skipped and
// keeps its members. Joins of a silent cascade are silent; leaves always
// emit, as every leave does.
func (t *txn) cascade(ctx context.Context, from *buckets.Bucket, moved []Transition, source Source, silent bool) error {
	if len(moved) == 0 {
		return nil
	}
	dependents := t.d.Buckets.Dependents(from.ID)
	if len(dependents) == 0 {
		return nil
	}
	// The users who moved, each once, in the order they moved. A sweep's
	// transaction moves up to db.LeaveChunk of them: looked up in the list
	// built so far, a chunk of 10 000 took 0.17 s of CPU.
	users := make([]string, 0, len(moved))
	seen := make(map[string]bool, len(moved))
	for _, tr := range moved {
		if !seen[tr.UserID] {
			seen[tr.UserID] = true
			users = append(users, tr.UserID)
		}
	}
	if t.cascaded == nil {
		t.cascaded = map[[2]string]bool{}
	}
	for _, b := range dependents {
		on, err := t.d.Switch.EnabledVia(ctx, t.tx, b.ID)
		if err != nil {
			return err
		}
		if !on {
			continue
		}
		// The dependents' locks first, then their evaluation, which sees
		// from's rows as this transaction wrote them.
		rows, err := db.LockUserMemberships(ctx, t.tx, users, []string{b.ID})
		if err != nil {
			return err
		}
		active := make(map[string]db.Membership, len(rows))
		for _, m := range rows {
			active[m.UserID] = m
		}
		decided := make([]db.Joiner, len(users))
		for i, u := range users {
			t.cascaded[[2]string{b.ID, u}] = true
			decided[i] = db.Joiner{UserID: u, Email: t.emails[u]}
		}
		if err := t.decide(ctx, b, decided, active, joinSpec{Source: source, Silent: silent}); err != nil {
			return fmt.Errorf("cascading from %q to %q: %w", from.ID, b.ID, err)
		}
	}
	return nil
}

// decide makes the users' memberships of b follow its criteria at the
// transaction's instant, through the funnel: those who are not active
// members (active holds the members, by user, whose rows the caller
// locked) join where the criteria hold, decided in the insert
// (joinSpec.Decide) as js says, and the members are evaluated in one
// compiled statement (db.EvaluateUsers) and leave where the criteria no
// longer hold. Deciding a non-member in the insert takes the decision an
// evaluation first would, in one statement less.
func (t *txn) decide(ctx context.Context, b *buckets.Bucket, users []db.Joiner, active map[string]db.Membership, js joinSpec) error {
	var joiners []db.Joiner
	var members []string
	for _, u := range users {
		if _, member := active[u.UserID]; member {
			members = append(members, u.UserID)
		} else {
			joiners = append(joiners, u)
		}
	}
	js.Decide = true
	if _, err := t.join(ctx, b, joiners, js); err != nil {
		return err
	}
	if len(members) == 0 {
		return nil
	}
	holds, err := db.EvaluateUsers(ctx, t.tx, b.Criteria, t.now, members)
	if err != nil {
		return fmt.Errorf("evaluating bucket %q: %w", b.ID, err)
	}
	var leavers []db.Membership
	for _, u := range members {
		if !holds[u] {
			leavers = append(leavers, active[u])
		}
	}
	_, err = t.leave(ctx, b, leavers, leaveSpec{Source: js.Source, Reason: ReasonCriteria})
	return err
}

// remember keeps the email of a membership that moved, which a join it
// cascades to records.
func (t *txn) remember(m db.Membership) {
	if t.emails == nil {
		t.emails = map[string]string{}
	}
	t.emails[m.UserID] = deref(m.UserEmail)
}

// heldByMinDwell reports whether a member who entered at enteredAt is still
// inside the bucket's minimum dwell at now: a leave then is deferred
// (contract §5.5 step 1).
func heldByMinDwell(b *buckets.Bucket, enteredAt, now time.Time) bool {
	return !b.MinDwell.IsZero() && now.Sub(enteredAt) < b.MinDwell.Std()
}

// transitionBatch is an empty batch of the events of one kind of
// transition of the bucket.
func transitionBatch(b *buckets.Bucket, kind TransitionKind, source Source, reason LeaveReason) db.Emissions {
	return db.Emissions{BucketID: b.ID, BucketName: b.Name, Transition: string(kind), Source: string(source), Reason: string(reason)}
}

// transitionEvents returns the events of one transition (contract §5.1):
// bucket:<transition>:<id>, and the generic bucket:<transition> when a
// journey is triggered by it.
func (t *txn) transitionEvents(b *buckets.Bucket, kind TransitionKind, userID, email string, epoch int) []db.Emission {
	own := db.Emission{
		Event:          "bucket:" + string(kind) + ":" + b.ID,
		IdempotencyKey: fmt.Sprintf("bucket:%s:%s:%s:%d", b.ID, userID, kind, epoch),
		UserID:         userID,
		UserEmail:      email,
		EntryCount:     epoch,
	}
	out := []db.Emission{own}
	if generic := "bucket:" + string(kind); t.d.Journeys.Binds(generic) {
		g := own
		g.Event, g.IdempotencyKey = generic, own.IdempotencyKey+":generic"
		out = append(out, g)
	}
	return out
}

// emit stores the events in user_events, enqueues a push for each one not
// stored before, and exits the journeys the stored ones end (contract §5.2
// step 1 and §5.6).
func (t *txn) emit(ctx context.Context, emissions db.Emissions) error {
	if len(emissions.Events) == 0 {
		return nil
	}
	stored, err := db.InsertEmissions(ctx, t.tx, t.d.Schema, emissions, t.now)
	if err != nil {
		return err
	}
	t.out.Pushes += len(stored)
	exits := journeyExits{}
	for _, e := range emissions.Events {
		if stored[e.IdempotencyKey] { // else emitted before
			exits.add(t.d.Journeys.ExitingOn(e.Event, emissions.Properties(e)), e.UserID)
		}
	}
	return t.exit(ctx, exits)
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

// exit exits the groups' journeys (contract §5.6) and adds the runs it
// exited to the outcome.
func (t *txn) exit(ctx context.Context, x journeyExits) error {
	for _, group := range slices.Sorted(maps.Keys(x)) {
		rows, err := db.ExitJourneys(ctx, t.tx, x[group], strings.Split(group, "\x00"), t.now)
		if err != nil {
			return err
		}
		t.out.Exited = append(t.out.Exited, rows...)
	}
	return nil
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
