package tasks

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/bucketworker/bucket-worker/buckets"
	"github.com/bucketworker/bucket-worker/db"
)

// ReconcileBatch is the size of a per-member evaluation batch and of a
// join-candidate batch (contract §6.2, §6.3).
const ReconcileBatch = 500

// sampleLimit is how many user ids a dry run lists per bucket.
const sampleLimit = 20

// ReconcileInput is the input of bucket-reconcile; the cron sends none.
type ReconcileInput struct {
	// BucketIDs limits the sweep to these buckets; empty sweeps them all.
	BucketIDs []string `json:"bucketIds,omitempty"`
	// DryRun computes what the sweep would do and changes nothing.
	DryRun bool `json:"dryRun,omitempty"`
}

// ParseReconcileInput decodes the input of a run triggered by name; the
// cron's empty input is a full sweep. Errors wrap ErrInvalidInput.
func ParseReconcileInput(payload []byte) (ReconcileInput, error) {
	var in ReconcileInput
	return in, decodeStrict(payload, &in, `{"bucketIds"?: [string], "dryRun"?: bool}`)
}

// ParseReconcileBucketInput decodes the input of bucket-reconcile-bucket.
// Errors wrap ErrInvalidInput.
func ParseReconcileBucketInput(payload []byte) (ReconcileBucketInput, error) {
	var in ReconcileBucketInput
	if err := decodeStrict(payload, &in, `{"bucketId": string, "dryRun"?: bool}`); err != nil {
		return in, err
	}
	if in.BucketID == "" {
		return in, fmt.Errorf("%w: bucketId is required", ErrInvalidInput)
	}
	return in, nil
}

// decodeStrict decodes a run's input into in: an unknown key or a wrong
// type is an ErrInvalidInput error that gives the expected shape (the SDK
// would panic on a payload that does not decode into the input type). An
// empty input is the zero value.
func decodeStrict(payload []byte, in any, shape string) error {
	if len(payload) == 0 || string(payload) == "null" {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.DisallowUnknownFields()
	if err := dec.Decode(in); err != nil {
		return fmt.Errorf("%w: the input must be %s: %v", ErrInvalidInput, shape, err)
	}
	return nil
}

// ReconcileOutput is the output of a sweep (contract §6.4).
type ReconcileOutput struct {
	// Reconciled counts every leave: criteria, TTL and deferred.
	Reconciled int `json:"reconciled"`
	Joined     int `json:"joined"`
	// DwellFired counts the fires of dwell schedules (contract §14).
	DwellFired int `json:"dwellFired"`
	// Cascaded counts the transitions the sweep's caused in the buckets
	// that read the buckets swept.
	Cascaded   int `json:"cascaded,omitempty"`
	Dispatched int `json:"dispatched"`
	Pending    int `json:"pending"` // pushes left in the outbox after the run
	// Delivered and DeliveriesPending are the deliveries to the other
	// destinations the run sent at its end and those left (contract §15).
	Delivered         int           `json:"delivered,omitempty"`
	DeliveriesPending int           `json:"deliveriesPending,omitempty"`
	DryRun            bool          `json:"dryRun,omitempty"`
	Buckets           []BucketSweep `json:"buckets"`
}

// BucketSweep is what a sweep did to one bucket.
type BucketSweep struct {
	BucketID     string `json:"bucketId"`
	Left         int    `json:"left"`         // criteria leaves
	TTLLeft      int    `json:"ttlLeft"`      // maxDwell leaves
	DeferredLeft int    `json:"deferredLeft"` // leaves minDwell had deferred
	Joined       int    `json:"joined"`
	DwellFired   int    `json:"dwellFired"`         // fires of the bucket's dwell schedules (contract §14)
	Evaluated    int    `json:"evaluated"`          // members evaluated one by one (composite criteria)
	Deferred     int    `json:"deferred,omitempty"` // leaves postponed by minDwell in this sweep
	// Cascaded counts the transitions of the buckets that read this one
	// that its passes caused (contract §13).
	Cascaded   int   `json:"cascaded,omitempty"`
	DurationMs int64 `json:"durationMs"`
	// Worker is the worker that swept the bucket, as a child run of the
	// sweep (contract §17); empty in a command.
	Worker  string `json:"worker,omitempty"`
	Skipped string `json:"skipped,omitempty"`
	// JoinsSkipped and DwellSkipped say why the join pass or the dwell
	// pass did not run (the first-deploy guard).
	JoinsSkipped string `json:"joinsSkipped,omitempty"`
	DwellSkipped string `json:"dwellSkipped,omitempty"`
	// BudgetSpent is true when a loop stopped at the sweep's time budget;
	// the next sweep carries on.
	BudgetSpent   bool     `json:"budgetSpent,omitempty"`
	Error         string   `json:"error,omitempty"`
	WouldLeave    *int     `json:"wouldLeave,omitempty"`
	WouldJoin     *int     `json:"wouldJoin,omitempty"`
	WouldFire     *int     `json:"wouldFire,omitempty"`
	SampleUserIDs []string `json:"sampleUserIds,omitempty"`
}

// Reconcile is the sweep of contract §6, in this process: the plan of
// ReconcileBy, whose buckets it sweeps here, those of one level at once up
// to a quarter of the connection pool.
func Reconcile(ctx context.Context, d *Deps, in ReconcileInput) (ReconcileOutput, error) {
	parallel := 1
	if n := d.DB.Stats().MaxOpenConnections; n >= 8 {
		parallel = n / 4
	}
	return ReconcileBy(ctx, d, in, func(ctx context.Context, b *buckets.Bucket, dryRun bool) (ReconcileOutput, error) {
		return sweepBucket(ctx, d, b, dryRun), nil
	}, parallel)
}

// A BucketSweeper sweeps one bucket of a sweep and says what it did, as an
// output of one bucket: in this process, or as a child run on whichever
// replica Hatchet hands it to (contract §17). An error is the bucket's
// failure: the sweep reports it and goes on.
type BucketSweeper func(ctx context.Context, b *buckets.Bucket, dryRun bool) (ReconcileOutput, error)

// ReconcileBy plans a sweep (contract §6, §17) and has sweepBucket sweep
// each bucket. In a running worker it first enqueues the backfills the §8
// diff asks for. The selected buckets go in levels of the dependency graph
// (SweepLevels): each level once the one before is done, up to parallel of
// its buckets at once. Each bucket has, on its own, the criteria leaves,
// the joins, the TTL leaves, the deferred leaves and the dwell fires that
// only the clock can cause. A bucket's error is reported in its entry and
// does not stop the others. Unless dry, the pushes it enqueued are
// dispatched before it returns.
func ReconcileBy(ctx context.Context, d *Deps, in ReconcileInput, sweepBucket BucketSweeper, parallel int) (ReconcileOutput, error) {
	levels, err := SweepLevels(d.Buckets, in.BucketIDs)
	if err != nil {
		return ReconcileOutput{}, err
	}
	if _, err := EnqueueBackfills(ctx, d); err != nil {
		d.Logger.ErrorContext(ctx, "enqueueing backfills", slog.Any("error", err))
	}
	out := ReconcileOutput{DryRun: in.DryRun, Buckets: []BucketSweep{}}
	swept := 0
	for _, level := range levels {
		outs := make([]ReconcileOutput, len(level))
		slots := make(chan struct{}, max(1, parallel))
		var wg sync.WaitGroup
		for i, b := range level {
			slots <- struct{}{}
			wg.Go(func() {
				defer func() { <-slots }()
				o, err := sweepBucket(ctx, b, in.DryRun)
				if err != nil {
					d.Logger.ErrorContext(ctx, "sweeping bucket", slog.String("bucket_id", b.ID), slog.Any("error", err))
					o = ReconcileOutput{Buckets: []BucketSweep{{BucketID: b.ID, Error: err.Error()}}}
				}
				outs[i] = o
			})
		}
		wg.Wait()
		for _, o := range outs {
			out.add(o)
		}
		swept += len(level)
	}
	if !in.DryRun {
		// What the outbox dispatcher has not sent yet goes out before the
		// run ends, so the output can say what is left.
		f := flush(ctx, d)
		out.Dispatched += f.dispatched
		out.Pending = f.pending
		out.Delivered, out.DeliveriesPending = f.delivered, f.undelivered
	}
	d.Logger.InfoContext(ctx, "reconcile sweep done", slog.Int("buckets", swept), slog.Int("levels", len(levels)),
		slog.Int("left", out.Reconciled), slog.Int("joined", out.Joined),
		slog.Int("dispatched", out.Dispatched), slog.Bool("dry_run", in.DryRun))
	return out, nil
}

// add counts the buckets of another output of the same sweep in out.
func (out *ReconcileOutput) add(o ReconcileOutput) {
	out.Reconciled += o.Reconciled
	out.Joined += o.Joined
	out.DwellFired += o.DwellFired
	out.Cascaded += o.Cascaded
	out.Dispatched += o.Dispatched
	out.Delivered += o.Delivered
	out.Buckets = append(out.Buckets, o.Buckets...)
}

// SweepLevels orders the buckets of a sweep — ids, or every bucket when
// empty — in levels of the dependency graph (contract §13, §17): a bucket
// in the level after the last of the buckets it references, so that its
// sweep reads their members once they are swept. A level keeps the
// registry's order. An unknown id is an ErrInvalidInput error.
func SweepLevels(reg *buckets.Registry, ids []string) ([][]*buckets.Bucket, error) {
	for _, id := range ids {
		if _, ok := reg.Get(id); !ok {
			return nil, fmt.Errorf("reconciling: %w: no enabled bucket %q", ErrInvalidInput, id)
		}
	}
	depth := map[string]int{}
	var levels [][]*buckets.Bucket
	for _, b := range reg.All() { // each after the buckets it references
		level := 0
		for _, ref := range b.References() {
			if l, ok := depth[ref]; ok {
				level = max(level, l+1)
			}
		}
		if len(ids) > 0 && !slices.Contains(ids, b.ID) {
			// Not swept, but what it references still orders its dependents.
			depth[b.ID] = level - 1
			continue
		}
		depth[b.ID] = level
		for len(levels) <= level {
			levels = append(levels, nil)
		}
		levels[level] = append(levels[level], b)
	}
	return slices.DeleteFunc(levels, func(l []*buckets.Bucket) bool { return len(l) == 0 }), nil
}

// ReconcileBucketInput is the input of bucket-reconcile-bucket (contract
// §17): the sweep of one bucket.
type ReconcileBucketInput struct {
	BucketID string `json:"bucketId"`
	DryRun   bool   `json:"dryRun,omitempty"`
}

// ReconcileBucket is bucket-reconcile-bucket: one bucket's sweep, run as
// a child of bucket-reconcile or triggered by name, without the §8 diff.
// Unless dry, the pushes it enqueued are dispatched before it returns.
func ReconcileBucket(ctx context.Context, d *Deps, in ReconcileBucketInput) (ReconcileOutput, error) {
	b, ok := d.Buckets.Get(in.BucketID)
	if !ok {
		return ReconcileOutput{}, fmt.Errorf("reconciling: %w: no enabled bucket %q", ErrInvalidInput, in.BucketID)
	}
	out := sweepBucket(ctx, d, b, in.DryRun)
	if !in.DryRun {
		f := flush(ctx, d)
		out.Dispatched += f.dispatched
		out.Pending = f.pending
		out.Delivered, out.DeliveriesPending = f.delivered, f.undelivered
	}
	return out, nil
}

// sweepBucket sweeps one bucket here, within the sweep budget from now,
// and says what it did as an output of one bucket.
func sweepBucket(ctx context.Context, d *Deps, b *buckets.Bucket, dryRun bool) ReconcileOutput {
	var deadline time.Time
	if d.SweepBudget > 0 {
		deadline = time.Now().Add(d.SweepBudget)
	}
	s := &sweep{d: d, b: b, dryRun: dryRun, deadline: deadline}
	rep := s.run(ctx)
	return ReconcileOutput{
		Reconciled: rep.Left + rep.TTLLeft + rep.DeferredLeft,
		Joined:     rep.Joined,
		DwellFired: rep.DwellFired,
		Cascaded:   rep.Cascaded,
		Dispatched: s.dispatched,
		DryRun:     dryRun,
		Buckets:    []BucketSweep{rep},
	}
}

// sweep is the reconciliation of one bucket.
type sweep struct {
	d        *Deps
	b        *buckets.Bucket
	now      time.Time
	dryRun   bool
	deadline time.Time
	rep      BucketSweep
	// dispatched counts the pushes the sweep's transactions sent inline.
	dispatched int
}

// BatchTimeout bounds each batch of a sweep — one set-based query, or one
// transaction of transitions: a batch stuck behind a lock or a runaway
// plan fails its bucket, and the sweep goes on with the next (River's job
// cleaner bounds its batches the same way).
const BatchTimeout = 2 * time.Minute

// transact runs one transaction of the sweep at its instant (see
// Deps.transact), bounded by BatchTimeout, and counts the pushes it sent.
func (s *sweep) transact(ctx context.Context, fn func(ctx context.Context, t *txn) error) (Outcome, error) {
	ctx, cancel := context.WithTimeout(ctx, BatchTimeout)
	defer cancel()
	out, err := s.d.transact(ctx, s.now, fn)
	s.dispatched += out.Dispatched
	s.rep.Cascaded += len(out.Transitions) - out.of(s.b.ID)
	return out, err
}

// query runs one set-based query of the sweep, bounded by BatchTimeout.
func query[T any](ctx context.Context, fn func(ctx context.Context) (T, error)) (T, error) {
	ctx, cancel := context.WithTimeout(ctx, BatchTimeout)
	defer cancel()
	return fn(ctx)
}

func (s *sweep) run(ctx context.Context) BucketSweep {
	start := time.Now()
	s.rep = BucketSweep{BucketID: s.b.ID}
	if s.dryRun {
		s.rep.WouldLeave, s.rep.WouldJoin = ptr(0), ptr(0)
		if len(s.d.Journeys.DwellReactions(s.b.ID)) > 0 {
			s.rep.WouldFire = ptr(0)
		}
	}
	err := s.passes(ctx)
	s.rep.DurationMs = time.Since(start).Milliseconds()
	if err == nil && !s.dryRun && s.d.Metrics != nil {
		sizes, countErr := db.CountMembers(ctx, s.d.DB, []string{s.b.ID})
		if countErr != nil {
			s.d.Logger.WarnContext(ctx, "metrics: counting the members", slog.String("bucket_id", s.b.ID), slog.Any("error", countErr))
		} else {
			s.d.Metrics.swept(s.b.ID, time.Since(start), sizes[s.b.ID])
		}
	}
	log := s.d.Logger.With(slog.String("bucket_id", s.b.ID))
	switch {
	case err != nil:
		s.rep.Error = err.Error()
		log.ErrorContext(ctx, "reconciling bucket", slog.Any("error", err))
	case s.rep.Skipped != "":
		log.DebugContext(ctx, "bucket skipped", slog.String("reason", s.rep.Skipped))
	case s.dryRun:
		log.InfoContext(ctx, "bucket dry run", slog.Int("would_leave", *s.rep.WouldLeave),
			slog.Int("would_join", *s.rep.WouldJoin), slog.Int64("duration_ms", s.rep.DurationMs))
	default:
		log.InfoContext(ctx, "bucket reconciled", slog.Int("left", s.rep.Left), slog.Int("ttl_left", s.rep.TTLLeft),
			slog.Int("deferred_left", s.rep.DeferredLeft), slog.Int("joined", s.rep.Joined),
			slog.Int("dwell_fired", s.rep.DwellFired),
			slog.Int("evaluated", s.rep.Evaluated), slog.Int64("duration_ms", s.rep.DurationMs))
	}
	return s.rep
}

func (s *sweep) passes(ctx context.Context) error {
	on, err := s.d.Switch.Enabled(ctx, s.b.ID)
	if err != nil {
		return err
	}
	if !on {
		s.rep.Skipped = "bucket_disabled"
		return nil
	}
	s.now = s.d.Now()
	b := s.b
	if b.TimeBased {
		if err := s.criteriaLeaves(ctx); err != nil {
			return fmt.Errorf("criteria leaves: %w", err)
		}
		if b.ReconcileJoins {
			if err := s.joins(ctx); err != nil {
				return fmt.Errorf("joins: %w", err)
			}
		}
	}
	if !b.MaxDwell.IsZero() {
		members, err := query(ctx, func(ctx context.Context) ([]db.Membership, error) {
			return db.DwellExpired(ctx, s.d.DB, b.ID, s.now)
		})
		if err != nil {
			return fmt.Errorf("TTL leaves: %w", err)
		}
		if s.rep.TTLLeft, err = s.leaveAll(ctx, members, leaveSpec{Source: SourceReconcile, Reason: ReasonMaxDwell}); err != nil {
			return fmt.Errorf("TTL leaves: %w", err)
		}
	}
	if !b.MinDwell.IsZero() {
		members, err := query(ctx, func(ctx context.Context) ([]db.Membership, error) {
			return db.DeferredLeavers(ctx, s.d.DB, b, s.now)
		})
		if err != nil {
			return fmt.Errorf("deferred leaves: %w", err)
		}
		spec := leaveSpec{Source: SourceReconcile, Reason: ReasonCriteria, Unless: b.Criteria}
		if s.rep.DeferredLeft, err = s.leaveAll(ctx, members, spec); err != nil {
			return fmt.Errorf("deferred leaves: %w", err)
		}
	}
	if err := s.dwellFires(ctx); err != nil {
		return fmt.Errorf("dwell fires: %w", err)
	}
	return nil
}

// dwellFires is step 5 of contract §6.2: for each dwell schedule that an
// enabled journey reacts to, every member due to fire it fires, set-based:
// the due members are taken in user key order, a chunk of db.LeaveChunk
// at a time, and each chunk is stamped and emitted in one transaction. Like
// the join pass, it waits for the bucket's backfill: a backfill's members
// have not been members for as long as their entered_at says.
func (s *sweep) dwellFires(ctx context.Context) error {
	reactions := s.d.Journeys.DwellReactions(s.b.ID)
	if len(reactions) == 0 {
		return nil
	}
	if reason, err := joinPassClosed(ctx, s.d, s.b); err != nil || reason != "" {
		s.rep.DwellSkipped = reason
		return err
	}
	for _, r := range reactions {
		pass := db.DwellPass{BucketID: s.b.ID, Label: r.Label, After: r.After, Every: r.Every, Now: s.now}
		for after := ""; !s.budgetSpent(); {
			page, err := query(ctx, func(ctx context.Context) (db.DuePage, error) {
				return db.DueDwellers(ctx, s.d.DB, pass, after, db.LeaveChunk)
			})
			if err != nil {
				return fmt.Errorf("%s: %w", r.Label, err)
			}
			if s.dryRun {
				*s.rep.WouldFire += len(page.IDs)
			} else {
				out, err := s.transact(ctx, func(ctx context.Context, t *txn) error {
					_, err := t.fireDwell(ctx, s.b, pass, page.IDs)
					return err
				})
				if err != nil {
					return fmt.Errorf("%s: %w", r.Label, err)
				}
				s.rep.DwellFired += out.of(s.b.ID)
			}
			if len(page.IDs) < db.LeaveChunk {
				break
			}
			after = page.Last
		}
	}
	return nil
}

// criteriaLeaves is step 1 of contract §6.2. A single event leg (where
// and aggregates included) or relative-date leg is one set-based
// SHOULD-LEAVE query; any other criteria are evaluated member by
// member, in batches, until every member was evaluated once or the budget
// is spent. A dry run uses the set-based query for both: it must not stamp
// last_evaluated_at.
func (s *sweep) criteriaLeaves(ctx context.Context) error {
	if s.b.SingleLeg() || s.dryRun {
		members, err := query(ctx, func(ctx context.Context) ([]db.Membership, error) {
			return db.CriteriaLeavers(ctx, s.d.DB, s.b, s.now)
		})
		if err != nil {
			return err
		}
		s.rep.Left, err = s.leaveAll(ctx, members, leaveSpec{Source: SourceReconcile, Reason: ReasonCriteria, Unless: s.b.Criteria})
		return err
	}
	for !s.budgetSpent() {
		var evaluated int
		out, err := s.transact(ctx, func(ctx context.Context, t *txn) error {
			batch, err := db.EvaluateMembers(ctx, t.tx, s.b, s.now, ReconcileBatch)
			if err != nil {
				return err
			}
			evaluated = len(batch)
			var leavers []db.Membership
			for _, m := range batch {
				if !m.Holds {
					leavers = append(leavers, m.Membership)
				}
			}
			// holds was computed on the batch statement's snapshot, before its
			// row locks were granted: leave re-checks it after the lock.
			_, err = t.leave(ctx, s.b, leavers, leaveSpec{Source: SourceReconcile, Reason: ReasonCriteria, Unless: s.b.Criteria})
			return err
		})
		if err != nil {
			return err
		}
		s.rep.Evaluated += evaluated
		s.rep.Left += out.of(s.b.ID)
		s.rep.Deferred += out.Deferred
		if evaluated < ReconcileBatch {
			return nil
		}
	}
	return nil
}

// leaveAll leaves the members (or, in a dry run, counts those it would
// leave), one transaction per chunk of db.LeaveChunk, and returns how
// many left.
func (s *sweep) leaveAll(ctx context.Context, members []db.Membership, spec leaveSpec) (int, error) {
	if s.dryRun {
		n := 0
		for _, m := range members {
			if !heldByMinDwell(s.b, m.EnteredAt, s.now) {
				n++
				s.sample(m.UserID)
			}
		}
		*s.rep.WouldLeave += n
		return 0, nil
	}
	left := 0
	for chunk := range slices.Chunk(members, db.LeaveChunk) {
		out, err := s.transact(ctx, func(ctx context.Context, t *txn) error {
			_, err := t.leave(ctx, s.b, chunk, spec)
			return err
		})
		if err != nil {
			return left, err
		}
		left += out.of(s.b.ID)
		s.rep.Deferred += out.Deferred
	}
	return left, nil
}

// joins is the join pass of contract §6.3: the candidates, chosen by one
// set-based query in user key order, join a batch at a time, each batch
// in one transaction that re-checks the criteria, until done or out of
// budget.
func (s *sweep) joins(ctx context.Context) error {
	if reason, err := joinPassClosed(ctx, s.d, s.b); err != nil || reason != "" {
		s.rep.JoinsSkipped = reason
		return err
	}
	// The everFired floor: a candidate fired an event of the criteria.
	// Relative-date criteria have none to fire: the clock alone moves
	// their contacts in (contract §3.6).
	everFired := s.b.EventNames
	if s.b.DateJoins {
		everFired = nil
	} else if len(everFired) == 0 {
		return nil // nobody can clear the everFired floor
	}
	candidates, err := query(ctx, func(ctx context.Context) ([]db.Candidate, error) {
		return db.JoinCandidates(ctx, s.d.DB, s.b, s.now, everFired)
	})
	if err != nil {
		return err
	}
	if s.dryRun {
		*s.rep.WouldJoin += len(candidates)
		for _, c := range candidates {
			s.sample(c.UserID)
		}
		return nil
	}
	for batch := range slices.Chunk(candidates, ReconcileBatch) {
		if s.budgetSpent() {
			return nil
		}
		joiners := make([]db.Joiner, len(batch))
		for i, c := range batch {
			joiners[i] = db.Joiner{UserID: c.UserID, Email: deref(c.Email)}
		}
		out, err := s.transact(ctx, func(ctx context.Context, t *txn) error {
			_, err := t.join(ctx, s.b, joiners, joinSpec{Source: SourceReconcile, Recheck: true})
			return err
		})
		if err != nil {
			return err
		}
		s.rep.Joined += out.of(s.b.ID)
	}
	return nil
}

// joinPassClosed is the first-deploy guard of contract §6.3: it returns
// why the sweep must not join anyone to the bucket yet, or "" when it may.
func joinPassClosed(ctx context.Context, d *Deps, b *buckets.Bucket) (string, error) {
	configs, err := db.BucketConfigs(ctx, d.DB)
	if err != nil {
		return "", err
	}
	if mode := NeededBackfill(b, configs); mode != "" {
		return map[BackfillMode]string{ModeFirstTime: "backfill_missing", ModeReeval: "criteria_changed"}[mode], nil
	}
	running, err := db.HasOpenBackfill(ctx, d.DB, b.ID)
	if err != nil || !running {
		return "", err
	}
	return "backfill_running", nil
}

func (s *sweep) budgetSpent() bool {
	if !s.deadline.IsZero() && time.Now().After(s.deadline) {
		s.rep.BudgetSpent = true
		return true
	}
	return false
}

func (s *sweep) sample(userID string) {
	if len(s.rep.SampleUserIDs) < sampleLimit {
		s.rep.SampleUserIDs = append(s.rep.SampleUserIDs, userID)
	}
}
