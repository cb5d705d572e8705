package tasks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bucketworker/bucket-worker/db"
	"github.com/bucketworker/bucket-worker/db/dbtest"
)

// seedLeavers makes n members of "recent" that the next sweep must leave.
func seedLeavers(e *env, n int) {
	require.NoError(e.t, dbtest.InsertMemberships(e.ctx, e.db, dbtest.Members(dbtest.Users("u", n), "recent", t0.Add(-9*day))))
}

func TestCrashBetweenCommitAndDispatchLosesNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t, defs{"buckets/recent.yaml": recentlyActive})
	seedLeavers(e, 2500)

	// The process dies right after the commit: nothing was pushed.
	out, err := Reconcile(e.ctx, e.offline(), ReconcileInput{})
	require.NoError(t, err)
	require.Equal(t, 2500, out.Reconciled)
	require.Equal(t, 0, out.Dispatched)
	require.Equal(t, 2500, out.Pending)

	// A later dispatch (a restarted worker) pushes each exactly once.
	n, err := e.dispatch()
	require.NoError(t, err)
	require.Equal(t, 2500, n)
	n, err = e.dispatch()
	require.NoError(t, err)
	require.Zero(t, n)
	keys := e.hatchet.pushedKeys()
	require.Len(t, keys, 2500)
	for key, pushes := range keys {
		require.Equal(t, 1, pushes, key)
	}
	require.LessOrEqual(t, slices.Max(e.hatchet.sizes), DispatchBatch, "bulk pushes of at most 1000")
	// A push is at most twice the one before it, and a batch may be
	// claimed while the push before it is on the wire, at the size known
	// then: 250, 250, 500, 500, 1 000 at worst.
	require.LessOrEqual(t, e.hatchet.calls, 5, "a command's first push is smaller, the next ones as large as Hatchet takes in time")
}

func TestFailingPushBacksOffAndRetries(t *testing.T) {
	t.Parallel()
	e := newEnv(t, defs{"buckets/recent.yaml": recentlyActive})
	seedLeavers(e, 3)
	e.hatchet.setFail(errHatchetDown)

	out := e.sweep(ReconcileInput{})
	require.Equal(t, 3, out.Reconciled, "the transitions commit whatever the push does")
	require.Equal(t, 0, out.Dispatched)
	require.Equal(t, 3, out.Pending)
	rows, err := dbtest.ListOutbox(e.ctx, e.db)
	require.NoError(t, err)
	for _, r := range rows {
		require.Equal(t, 1, r.Attempts)
		require.Equal(t, errHatchetDown.Error(), *r.LastError)
		require.Equal(t, t0.Add(RetryBase), r.AvailableAt.UTC())
		require.Nil(t, r.DispatchedAt)
	}

	// Not due yet: no attempt.
	calls := e.hatchet.calls
	_, err = e.dispatch()
	require.NoError(t, err)
	require.Equal(t, calls, e.hatchet.calls)

	// Due, still failing: the backoff doubles.
	e.clock.Advance(RetryBase)
	_, err = e.dispatch()
	require.ErrorIs(t, err, errHatchetDown)
	rows, _ = dbtest.ListOutbox(e.ctx, e.db)
	require.Equal(t, 2, rows[0].Attempts)
	require.Equal(t, e.clock.Now().Add(2*RetryBase), rows[0].AvailableAt.UTC())

	// Many failures later the backoff is capped.
	rows, _ = dbtest.ListOutbox(e.ctx, e.db)
	for i := range rows {
		rows[i].Attempts, rows[i].AvailableAt = 20, e.clock.Now()
	}
	require.NoError(t, dbtest.UpdateOutbox(e.ctx, e.db, rows))
	_, err = e.dispatch()
	require.ErrorIs(t, err, errHatchetDown)
	rows, _ = dbtest.ListOutbox(e.ctx, e.db)
	require.Equal(t, e.clock.Now().Add(RetryCap), rows[0].AvailableAt.UTC())

	// Hatchet is back: everything goes out, once.
	e.hatchet.setFail(nil)
	e.clock.Advance(RetryCap)
	n, err := e.dispatch()
	require.NoError(t, err)
	require.Equal(t, 3, n)
	require.Len(t, e.hatchet.pushedKeys(), 3)
	summary, err := db.SummarizeOutbox(e.ctx, e.db, 10)
	require.NoError(t, err)
	require.Zero(t, summary.Pending)
}

func TestConcurrentDispatchersShareTheOutbox(t *testing.T) {
	t.Parallel()
	e := newEnv(t, defs{"buckets/recent.yaml": recentlyActive})
	seedLeavers(e, 5000)
	_, err := Reconcile(e.ctx, e.offline(), ReconcileInput{})
	require.NoError(t, err)

	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			_, err := e.dispatch()
			require.NoError(t, err)
		})
	}
	wg.Wait()
	keys := e.hatchet.pushedKeys()
	require.Len(t, keys, 5000)
	for key, pushes := range keys {
		require.Equal(t, 1, pushes, key)
	}
}

func TestDryRunChangesNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t, defs{"buckets/recent.yaml": recentlyActive, "buckets/dormant.yaml": wentDormant})
	e.backfilled("dormant")
	seedLeavers(e, 30)
	e.contact("lapsed", `{}`)
	e.events("lapsed", "app.active", 10*day)

	out := e.sweep(ReconcileInput{DryRun: true})
	require.True(t, out.DryRun)
	recent := out.bucket("recent")
	require.Equal(t, 30, *recent.WouldLeave)
	require.Equal(t, 0, recent.Left)
	require.Len(t, recent.SampleUserIDs, sampleLimit)
	dormant := out.bucket("dormant")
	require.Equal(t, 1, *dormant.WouldJoin)
	require.Equal(t, []string{"lapsed"}, dormant.SampleUserIDs)

	require.Equal(t, 30, e.count("SELECT count(*) FROM bucket_memberships WHERE status = 'active'"))
	require.Equal(t, 0, e.count("SELECT count(*) FROM bucket_memberships WHERE last_evaluated_at IS NOT NULL"))
	require.Equal(t, 0, e.count("SELECT count(*) FROM user_events WHERE source = 'bucket'"))
	require.Equal(t, 0, e.count("SELECT count(*) FROM bucket_event_outbox"))
}

func TestRuntimeSwitchSkipsTheBucket(t *testing.T) {
	t.Parallel()
	e := newEnv(t, defs{"buckets/recent.yaml": recentlyActive})
	seedLeavers(e, 5)
	require.NoError(t, e.deps.Switch.Set(e.ctx, "recent", false, t0))

	rep := e.sweep(ReconcileInput{}).bucket("recent")
	require.Equal(t, "bucket_disabled", rep.Skipped)
	require.Equal(t, 5, e.count("SELECT count(*) FROM bucket_memberships WHERE status = 'active'"))
	require.Equal(t, 0, e.count("SELECT count(*) FROM bucket_event_outbox"))

	require.NoError(t, e.deps.Switch.Set(e.ctx, "recent", true, t0))
	require.Equal(t, 5, e.sweep(ReconcileInput{}).Reconciled)
}

func TestRuntimeSwitchCachesForItsTTL(t *testing.T) {
	t.Parallel()
	e := newEnv(t, defs{"buckets/recent.yaml": recentlyActive})
	sw := NewRuntimeSwitch(e.db, time.Hour)
	on, err := sw.Enabled(e.ctx, "recent")
	require.NoError(t, err)
	require.True(t, on)
	require.NoError(t, db.SetBucketEnabled(e.ctx, e.db, "recent", false, t0)) // another replica
	on, _ = sw.Enabled(e.ctx, "recent")
	require.True(t, on, "cached")
	require.NoError(t, sw.Set(e.ctx, "other", true, t0)) // a write through this switch drops the cache
	on, _ = sw.Enabled(e.ctx, "recent")
	require.False(t, on)
}

func TestUnknownBucketIsAnError(t *testing.T) {
	t.Parallel()
	e := newEnv(t, defs{"buckets/recent.yaml": recentlyActive})
	_, err := Reconcile(e.ctx, e.deps, ReconcileInput{BucketIDs: []string{"nope"}})
	require.ErrorContains(t, err, `"nope"`)
}

func TestRunningDispatcherIsWokenByTaskRuns(t *testing.T) {
	t.Parallel()
	e := newEnv(t, defs{"buckets/recent.yaml": recentlyActive})
	ctx, cancel := context.WithCancel(e.ctx)
	var wg sync.WaitGroup
	wg.Go(func() { e.deps.Dispatcher.Run(ctx, time.Hour) })
	defer func() { cancel(); wg.Wait() }()

	e.ingest("app.active", `{"userId":"u"}`)
	require.Eventually(t, func() bool { return len(e.hatchet.pushedKeys()) == 1 }, 5*time.Second, 10*time.Millisecond,
		"the ingest woke the dispatcher; its ticker is an hour away")
}

// slowHatchet answers a push after perEvent for each of its events and,
// as a real Hatchet does, takes every event of a push whether or not its
// caller waited for the answer.
type slowHatchet struct {
	perEvent time.Duration
	mu       sync.Mutex
	taken    []string // idempotency keys, in the order taken
	pending  sync.WaitGroup
}

func (h *slowHatchet) Push(ctx context.Context, events []db.OutboxEvent) error {
	done := make(chan struct{})
	h.pending.Go(func() {
		time.Sleep(time.Duration(len(events)) * h.perEvent)
		h.mu.Lock()
		for _, e := range events {
			h.taken = append(h.taken, deref(e.IdempotencyKey))
		}
		h.mu.Unlock()
		close(done)
	})
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (h *slowHatchet) CancelRuns(context.Context, []string) error { return nil }

// TestDispatchToAHatchetSlowerThanThePushTimeout: the first push of 1 000
// takes longer than the timeout, and Hatchet takes it all the same. The
// dispatcher pushes smaller, pushes the timed-out rows again after their
// backoff without letting them block the rows not tried yet, sends the
// transitions before the arms, and delivers every row, each key at most
// twice.
func TestDispatchToAHatchetSlowerThanThePushTimeout(t *testing.T) {
	t.Parallel()
	e := newEnv(t, defs{})
	const transitions, arms = 1500, 3000
	var rows []db.OutboxEvent
	for i := range arms + transitions { // the arms first, as a backfill that armed them would write them
		row := db.OutboxEvent{EventKey: ArmExpiryEvent, Payload: json.RawMessage(`{}`),
			IdempotencyKey: ptr(fmt.Sprintf("arm:%d", i)), CreatedAt: t0, AvailableAt: t0}
		if i >= arms {
			row.EventKey, row.IdempotencyKey = "bucket:left:b", ptr(fmt.Sprintf("bucket:b:u%d:left:1", i))
		}
		rows = append(rows, row)
	}
	require.NoError(t, db.InsertOutbox(e.ctx, e.db, rows))

	slow := &slowHatchet{perEvent: time.Millisecond}
	d := NewDispatcher(e.db, slow, e.deps.Logger, time.Now)
	const timeout = 400 * time.Millisecond
	d.sizes[timeout] = DispatchBatch // a first push as a worker makes it: 1 000 events, a second here
	deadline := time.Now().Add(time.Minute)
	for { // as Run does: after a timed-out push, again at once
		_, err := d.Dispatch(e.ctx, timeout)
		if !errors.Is(err, errPushTimedOut) {
			require.NoError(t, err, "a smaller push goes through")
		}
		summary, err := db.SummarizeOutbox(e.ctx, e.db, 0)
		require.NoError(t, err)
		if summary.Pending == 0 {
			break
		}
		require.True(t, time.Now().Before(deadline), "%d rows still pending after a minute", summary.Pending)
		time.Sleep(100 * time.Millisecond)
	}
	slow.pending.Wait()

	times := map[string]int{}
	lastTransition, armsBefore := 0, 0
	for i, key := range slow.taken {
		times[key]++
		if strings.HasPrefix(key, "bucket:") && times[key] == 1 {
			lastTransition = i
		}
	}
	for _, key := range slow.taken[:lastTransition] {
		if strings.HasPrefix(key, "arm:") {
			armsBefore++
		}
	}
	require.Len(t, times, transitions+arms, "every row was delivered")
	for key, n := range times {
		require.LessOrEqual(t, n, 2, "key %s taken %d times", key, n)
	}
	require.Less(t, armsBefore, arms/2, "the transitions went out before most arms")
	twice := 0
	for _, n := range times {
		if n == 2 {
			twice++
		}
	}
	t.Logf("%d pushes of %d rows: %d keys taken twice (the timed-out first push)", len(slow.taken), len(rows), twice)
}

// gatedHatchet holds each push until the test lets it go: it says which
// push is on the wire on onWire, then waits on done for that push's
// outcome.
type gatedHatchet struct {
	fakeHatchet
	onWire chan []db.OutboxEvent
	done   chan error
}

func newGatedHatchet() *gatedHatchet {
	return &gatedHatchet{onWire: make(chan []db.OutboxEvent), done: make(chan error)}
}

func (h *gatedHatchet) Push(ctx context.Context, events []db.OutboxEvent) error {
	h.onWire <- events
	if err := <-h.done; err != nil {
		return err
	}
	return h.fakeHatchet.Push(ctx, events)
}

// gatedDispatcher is an engine with the pushes of n leavers in its outbox,
// and a dispatcher of them, by 1 000, to a gated Hatchet.
func gatedDispatcher(t *testing.T, n int) (*env, *gatedHatchet, *Dispatcher) {
	e := newEnv(t, defs{"buckets/recent.yaml": recentlyActive})
	seedLeavers(e, n)
	_, err := Reconcile(e.ctx, e.offline(), ReconcileInput{})
	require.NoError(t, err)
	h := newGatedHatchet()
	d := NewDispatcher(e.db, h, e.deps.Logger, e.clock.Now)
	d.sizes[CommandPushTimeout] = DispatchBatch
	return e, h, d
}

// outboxState counts the outbox's rows by state: leased and not yet
// dispatched, dispatched, and neither.
func outboxState(t *testing.T, e *env) (leased, dispatched, free int) {
	rows, err := dbtest.ListOutbox(e.ctx, e.db)
	require.NoError(t, err)
	for _, r := range rows {
		switch {
		case r.DispatchedAt != nil:
			dispatched++
		case r.LeasedUntil != nil:
			leased++
		default:
			free++
		}
	}
	return leased, dispatched, free
}

// TestDispatchOverlapsItsStatementsWithThePush: while a push is on the
// wire, the next batch is already leased and the batch before is already
// marked; the pushes go out one at a time, in the order of the outbox.
func TestDispatchOverlapsItsStatementsWithThePush(t *testing.T) {
	t.Parallel()
	e, h, d := gatedDispatcher(t, 2500)

	type result struct {
		n   int
		err error
	}
	out := make(chan result, 1)
	go func() {
		n, err := d.Dispatch(e.ctx, CommandPushTimeout)
		out <- result{n, err}
	}()
	var order []int64
	wantWhileOnWire := [][3]int{ // leased, dispatched, free
		{2000, 0, 500},  // the first push, and the second batch claimed early
		{1500, 1000, 0}, // the second push, the first marked, the last 500 claimed
		{500, 2000, 0},  // the last push, the second marked
	}
	for i, want := range wantWhileOnWire {
		batch := <-h.onWire
		for _, r := range batch {
			order = append(order, r.ID)
		}
		require.Eventually(t, func() bool {
			leased, dispatched, free := outboxState(t, e)
			return [3]int{leased, dispatched, free} == want
		}, 5*time.Second, 10*time.Millisecond, "push %d on the wire", i+1)
		h.done <- nil
	}
	r := <-out
	require.NoError(t, r.err)
	require.Equal(t, 2500, r.n)
	require.True(t, slices.IsSorted(order), "the pushes went out in the outbox's order")
	leased, dispatched, free := outboxState(t, e)
	require.Equal(t, [3]int{0, 2500, 0}, [3]int{leased, dispatched, free})
}

// TestFailedPushReleasesTheBatchClaimedEarly: when a push fails, its rows
// back off and the batch claimed while it was on the wire goes back at
// once, so the next dispatch pushes it without waiting for its lease.
func TestFailedPushReleasesTheBatchClaimedEarly(t *testing.T) {
	t.Parallel()
	e, h, d := gatedDispatcher(t, 1500)

	out := make(chan error, 1)
	go func() {
		_, err := d.Dispatch(e.ctx, CommandPushTimeout)
		out <- err
	}()
	<-h.onWire
	require.Eventually(t, func() bool {
		leased, _, _ := outboxState(t, e)
		return leased == 1500
	}, 5*time.Second, 10*time.Millisecond, "the second batch is claimed while the first is on the wire")
	h.done <- errHatchetDown
	require.ErrorIs(t, <-out, errHatchetDown)

	rows, err := dbtest.ListOutbox(e.ctx, e.db)
	require.NoError(t, err)
	failed := 0
	for _, r := range rows {
		require.Nil(t, r.LeasedUntil, "row %d is leased no more", r.ID)
		if r.Attempts == 1 {
			failed++
			require.Equal(t, t0.Add(RetryBase), r.AvailableAt.UTC())
		} else {
			require.Zero(t, r.Attempts)
			require.Equal(t, t0, r.AvailableAt.UTC(), "the early batch is due at once")
		}
	}
	require.Equal(t, 1000, failed)

	// Same clock: only the early batch is due, and it goes out at once.
	go func() {
		<-h.onWire
		h.done <- nil
	}()
	n, err := d.Dispatch(e.ctx, CommandPushTimeout)
	require.NoError(t, err)
	require.Equal(t, 500, n)
}
