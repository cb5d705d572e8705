package tasks

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/bucketworker/bucket-worker/db"
	"github.com/bucketworker/bucket-worker/db/dbtest"
)

// Segments of segments (contract §13): a committed transition of a bucket
// moves the buckets that read it, in the same transaction, on every path.

const (
	// recentBucket: app.active within 7d, time-based.
	recentBucket = "id: recent\nname: Recent\ncriteria: {type: event, eventName: app.active, check: exists, within: 7d}\n"
	// engagedBucket reads recent: its members who are on the pro plan.
	engagedBucket = "id: engaged\nname: Engaged\ncriteria: {type: composite, operator: and, conditions: [" +
		"{type: bucket, bucketId: recent, check: member}, {type: property, property: plan, operator: eq, value: pro}]}\n"
	// vipBucket reads engaged: a chain recent → engaged → vip.
	vipBucket = "id: vip\nname: VIP\ncriteria: {type: composite, operator: and, conditions: [" +
		"{type: bucket, bucketId: engaged, check: member}, {type: property, property: seats, operator: gte, value: 10}]}\n"
	// lapsedBucket reads recent the other way: pro users not in it.
	lapsedBucket = "id: lapsed\nname: Lapsed\ncriteria: {type: composite, operator: and, conditions: [" +
		"{type: bucket, bucketId: recent, check: not_member}, {type: property, property: plan, operator: eq, value: pro}]}\n"
)

var cascadeDefs = defs{"buckets/recent.yaml": recentBucket, "buckets/engaged.yaml": engagedBucket,
	"buckets/vip.yaml": vipBucket, "buckets/lapsed.yaml": lapsedBucket}

// keys returns the idempotency keys of the user's transitions, in order.
func (e *env) keys(userID string) []string {
	var out []string
	for _, ev := range e.transitions(userID) {
		out = append(out, *ev.IdempotencyKey)
	}
	return out
}

func TestIngestCascadesDownTheGraph(t *testing.T) {
	t.Parallel()
	e := newEnv(t, cascadeDefs)
	e.contact("u", `{"plan":"pro","seats":12}`)

	out := e.ingest("app.active", `{"userId":"u"}`)
	var got []string
	for _, tr := range out.Transitions {
		got = append(got, tr.BucketID+" "+string(tr.Transition))
	}
	require.Equal(t, []string{"recent entered", "engaged entered", "vip entered"}, got,
		"the ingest that joins recent joins engaged, which joins vip, in the same run")
	require.ElementsMatch(t, []string{"bucket:recent:u:entered:1", "bucket:engaged:u:entered:1", "bucket:vip:u:entered:1"}, e.keys("u"))
	for _, ev := range e.transitions("u") {
		require.Contains(t, string(ev.Properties), `"source": "event"`, "a cascaded transition has the source of its cause")
	}
	require.Len(t, e.hatchet.pushedKeys(), 3)
	require.Equal(t, "u@example.com", *e.memberships("vip", "u")[0].UserEmail, "a cascaded join records the member's email")

	// A user who is not pro joins recent and lapsed stays out.
	e.contact("free", `{"plan":"free"}`)
	out = e.ingest("app.active", `{"userId":"free"}`)
	require.Len(t, out.Transitions, 1)
	require.Equal(t, "none", e.status("engaged", "free"))
}

// An event that is a candidate of both ends of a cascade — it joins recent
// and sets the plan engaged reads — decides engaged once: in the cascade
// from recent, not again as a candidate of the round.
func TestIngestDecidesACascadedCandidateOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t, defs{"buckets/recent.yaml": recentBucket, "buckets/engaged.yaml": engagedBucket})
	calls := &callCounter{counts: map[string]int{}}
	e.db.AddQueryHook(calls)

	out := e.ingest("app.active", `{"userId":"u","contactProperties":{"plan":"pro"}}`)
	var got []string
	for _, tr := range out.Transitions {
		got = append(got, tr.BucketID+" "+string(tr.Transition))
	}
	require.Equal(t, []string{"recent entered", "engaged entered"}, got)
	calls.mu.Lock()
	defer calls.mu.Unlock()
	// A user who is not a member is decided in the insert (txn.decide):
	// recent in the round, engaged in the cascade, once each.
	require.Zero(t, calls.counts["db.EvaluateUsers"], "%v", calls.counts)
	require.Equal(t, 2, calls.counts["db.JoinMemberships"], "recent, then engaged in the cascade: %v", calls.counts)
}

// callCounter counts the statements each function of the db package runs.
type callCounter struct {
	mu     sync.Mutex
	counts map[string]int
}

func (c *callCounter) BeforeQuery(ctx context.Context, _ *bun.QueryEvent) context.Context {
	if caller := dbCaller(); caller != "" {
		c.mu.Lock()
		c.counts[caller]++
		c.mu.Unlock()
	}
	return ctx
}

func (c *callCounter) AfterQuery(context.Context, *bun.QueryEvent) {}

func TestSweepLeaveCascades(t *testing.T) {
	t.Parallel()
	e := newEnv(t, cascadeDefs)
	e.contact("u", `{"plan":"pro","seats":12}`)
	e.ingest("app.active", `{"userId":"u"}`)
	require.Equal(t, db.StatusActive, e.status("vip", "u"))

	e.clock.Advance(8 * day) // recent's window lapses
	out := e.sweep(ReconcileInput{})
	require.Equal(t, 1, out.bucket("recent").Left)
	require.Equal(t, db.StatusLeft, e.status("engaged", "u"), "recent's leave leaves engaged")
	require.Equal(t, db.StatusLeft, e.status("vip", "u"), "and vip, down the chain")
	require.Equal(t, db.StatusActive, e.status("lapsed", "u"), "and joins lapsed, which reads recent the other way")
	for _, ev := range e.transitions("u")[3:] {
		require.Contains(t, string(ev.Properties), `"source": "reconcile"`)
	}
	require.ElementsMatch(t, []string{"bucket:recent:u:entered:1", "bucket:engaged:u:entered:1", "bucket:vip:u:entered:1",
		"bucket:recent:u:left:1", "bucket:engaged:u:left:1", "bucket:vip:u:left:1", "bucket:lapsed:u:entered:1"}, e.keys("u"))
	require.Zero(t, e.sweep(ReconcileInput{}).Reconciled, "nothing left to do")
}

func TestExpiryLeaveCascades(t *testing.T) {
	t.Parallel()
	e := newEnv(t, defs{"buckets/active-now.yaml": activeNow,
		"buckets/engaged.yaml": "id: engaged\nname: Engaged\ncriteria: {type: bucket, bucketId: active-now, check: member}\n"})
	e.ingest("app.active", `{"userId":"u"}`)
	require.Equal(t, db.StatusActive, e.status("engaged", "u"))
	a := e.armed()
	require.Len(t, a, 1)
	e.clock.Advance(16 * time.Minute)
	for _, arm := range a {
		require.Equal(t, StatusLeft, e.expire(arm).Status)
	}
	require.Equal(t, db.StatusLeft, e.status("engaged", "u"), "the timer's leave leaves engaged")
}

func TestReevaluationCascades(t *testing.T) {
	t.Parallel()
	e := newEnv(t, cascadeDefs)
	e.contact("u", `{"plan":"pro","seats":12}`)
	e.ingest("app.active", `{"userId":"u"}`)
	// recent's criteria change: a 1-hour window, which u's event is outside.
	e.clock.Advance(2 * time.Hour)
	v2 := newEnvOn(t, e.db, e.clock, defs{"buckets/recent.yaml": "id: recent\nname: Recent\n" +
		"criteria: {type: event, eventName: app.active, check: exists, within: 1h}\n",
		"buckets/engaged.yaml": engagedBucket, "buckets/vip.yaml": vipBucket, "buckets/lapsed.yaml": lapsedBucket})
	out := v2.backfill("recent", ModeReeval)
	require.Equal(t, 1, out.Left)
	require.Equal(t, db.StatusLeft, v2.status("engaged", "u"), "the re-evaluation's leave leaves engaged")
	require.Equal(t, db.StatusLeft, v2.status("vip", "u"))
	for _, ev := range v2.transitions("u")[3:] {
		require.Contains(t, string(ev.Properties), `"source": "backfill"`)
	}
}

// A first-time backfill joins silently, and so does what it cascades to.
func TestSilentBackfillCascadesSilently(t *testing.T) {
	t.Parallel()
	e := newEnv(t, cascadeDefs)
	e.contact("u", `{"plan":"pro","seats":12}`)
	e.events("u", "app.active", day)
	require.Equal(t, 1, e.backfill("recent", ModeFirstTime).Joined)
	require.Equal(t, db.StatusActive, e.status("engaged", "u"))
	require.Equal(t, db.StatusActive, e.status("vip", "u"))
	require.Empty(t, e.transitions("u"), "no journey starts for history")
}

// The cascaded transitions of a bucket are its own: its entry limit
// applies (and its minDwell, below).
func TestEntryLimitOfACascadedBucket(t *testing.T) {
	t.Parallel()
	e := newEnv(t, defs{"buckets/recent.yaml": recentBucket,
		"buckets/engaged.yaml": "id: engaged\nname: Engaged\nentryLimit: once\n" +
			"criteria: {type: bucket, bucketId: recent, check: member}\n"})
	e.ingest("app.active", `{"userId":"u"}`)
	require.Equal(t, db.StatusActive, e.status("engaged", "u"))

	e.clock.Advance(8 * day)
	e.sweep(ReconcileInput{}) // recent leaves, and engaged with it
	require.Equal(t, db.StatusLeft, e.status("engaged", "u"))

	e.ingest("app.active", `{"userId":"u"}`) // joins both again; once keeps engaged's second join silent
	require.Equal(t, db.StatusActive, e.status("engaged", "u"))
	require.Equal(t, 2, e.memberships("engaged", "u")[1].EntryCount)
	require.NotContains(t, e.keys("u"), "bucket:engaged:u:entered:2", "entryLimit once suppresses the second join")
	require.Contains(t, e.keys("u"), "bucket:recent:u:entered:2")
}

// TestMinDwellDefersACascadedLeave: recent lapses an hour after engaged
// joined, inside engaged's minDwell of two days: engaged's leave is
// deferred, and the sweep's deferred pass completes it.
func TestMinDwellDefersACascadedLeave(t *testing.T) {
	t.Parallel()
	e := newEnv(t, defs{"buckets/recent.yaml": "id: recent\nname: Recent\ncriteria: {type: event, eventName: app.active, check: exists, within: 1h}\n",
		"buckets/engaged.yaml": "id: engaged\nname: Engaged\nminDwell: 2d\ncriteria: {type: bucket, bucketId: recent, check: member}\n"})
	e.ingest("app.active", `{"userId":"u"}`)
	e.clock.Advance(2 * time.Hour)
	out := e.sweep(ReconcileInput{})
	require.Equal(t, 1, out.bucket("recent").Left)
	require.Equal(t, db.StatusActive, e.status("engaged", "u"), "minDwell holds engaged's member")
	require.NotNil(t, e.memberships("engaged", "u")[0].ExpiresAt, "the leave is deferred")
	e.clock.Advance(2 * day)
	out = e.sweep(ReconcileInput{})
	require.Equal(t, 1, out.bucket("engaged").DeferredLeft)
	require.Equal(t, db.StatusLeft, e.status("engaged", "u"))
}

// A runtime-disabled bucket keeps its members, and its dependents read
// them as they are; a disabled dependent is not cascaded into.
func TestCascadeAndTheRuntimeSwitch(t *testing.T) {
	t.Parallel()
	e := newEnv(t, cascadeDefs)
	e.contact("u", `{"plan":"pro","seats":12}`)
	require.NoError(t, e.deps.Switch.Set(e.ctx, "engaged", false, t0))
	e.ingest("app.active", `{"userId":"u"}`)
	require.Equal(t, db.StatusActive, e.status("recent", "u"))
	require.Equal(t, "none", e.status("engaged", "u"), "a disabled dependent is skipped")
	require.Equal(t, "none", e.status("vip", "u"))
}

// TestRaceCascade races, for members of recent (and so of engaged) whose
// window lapsed, the sweep of recent — whose leaves cascade to engaged —
// with ingests of fresh events that keep them in recent; odd rounds race
// two ingests of each user instead. After each round both buckets agree
// with their criteria over the committed data, and each transition was
// emitted once.
func TestRaceCascade(t *testing.T) {
	t.Parallel()
	e := newEnv(t, defs{"buckets/recent.yaml": "id: recent\nname: Recent\ncriteria: {type: event, eventName: key.action, check: exists, within: 1h}\n",
		"buckets/engaged.yaml": engagedBucket})
	for round := range raceRounds {
		raced, fillers := roundUsers(round, "raced", raceUsers), roundUsers(round, "filler", raceFillers)
		users := append(append([]string(nil), raced...), fillers...)
		require.NoError(t, dbtest.InsertContacts(e.ctx, e.db, dbtest.Contacts(users, `{"plan":"pro"}`)))
		e.lapsedMembers("recent", users...)
		members := dbtest.Members(users, "engaged", e.clock.Now().Add(-3*time.Hour))
		for i := range members {
			members[i].Source = ptr(fixtureSource)
		}
		require.NoError(t, dbtest.InsertMemberships(e.ctx, e.db, members))

		var wg sync.WaitGroup
		if round%2 == 0 {
			wg.Go(func() {
				jitter(10 * time.Millisecond)
				e.sweep(ReconcileInput{BucketIDs: []string{"recent"}})
			})
		}
		for _, u := range raced {
			for range 1 + round%2 {
				wg.Go(func() {
					jitter(40 * time.Millisecond)
					e.ingest("key.action", `{"userId":"`+u+`"}`)
				})
			}
		}
		wg.Wait()
		e.requireAgrees(e.bucket("recent"), round, raced)
		e.requireAgrees(e.bucket("engaged"), round, raced)
	}
}
