package tasks

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/bucketworker/bucket-worker/db"
	"github.com/bucketworker/bucket-worker/db/dbtest"
)

const recentlyActive = "id: recent\nname: Recent\ncriteria: {type: event, eventName: app.active, check: exists, within: 7d}\n"

func TestConcurrentSweepsEmitEachTransitionOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t, defs{"buckets/recent.yaml": recentlyActive, "buckets/engaged-pro.yaml": proAndActive})
	const n = 3000
	users := dbtest.Users("u", n)
	require.NoError(t, dbtest.InsertContacts(e.ctx, e.db, dbtest.Contacts(users, `{"plan":"pro"}`)))
	require.NoError(t, dbtest.InsertUserEvents(e.ctx, e.db, dbtest.Events(users, "app.active", t0.Add(-8*day))))
	for _, b := range []string{"recent", "engaged-pro"} {
		require.NoError(t, dbtest.InsertMemberships(e.ctx, e.db, dbtest.Members(users, b, t0.Add(-9*day))))
	}

	var wg sync.WaitGroup
	outs := make([]ReconcileOutput, 4)
	for i := range outs {
		wg.Go(func() {
			out, err := Reconcile(e.ctx, e.deps, ReconcileInput{})
			require.NoError(t, err)
			outs[i] = out
		})
	}
	wg.Wait()

	total := 0
	for _, out := range outs {
		total += out.Reconciled
	}
	require.Equal(t, 2*n, total, "the sweeps split the leavers; none is left twice")
	require.Equal(t, 2*n, e.count("SELECT count(*) FROM user_events WHERE source = 'bucket'"))
	require.Equal(t, 2*n, e.count("SELECT count(DISTINCT idempotency_key) FROM bucket_event_outbox"))
	require.Equal(t, 2*n, e.count("SELECT count(*) FROM bucket_event_outbox"))
	for key, pushes := range e.hatchet.pushedKeys() {
		require.Equal(t, 1, pushes, key)
	}
}

func TestStaleLeaveNeverFlipsTheNewerMembership(t *testing.T) {
	t.Parallel()
	e := newEnv(t, defs{"buckets/recent.yaml": recentlyActive})
	b := e.bucket("recent")
	e.events("u", "app.active", 8*day)
	e.member("recent", "u", 9*day)

	// The sweep chose its leavers...
	stale, err := db.CriteriaLeavers(e.ctx, e.db, b, t0)
	require.NoError(t, err)
	require.Len(t, stale, 1)

	// ...then, before its CAS, the user left and came back (epoch 2).
	e.events("u", "app.active", 0)
	e.inTx(func(tx *txn) {
		_, err := tx.leave(e.ctx, b, stale, leaveSpec{Source: SourceEvent, Reason: ReasonCriteria})
		require.NoError(t, err)
		_, err = tx.join(e.ctx, b, []db.Joiner{{UserID: "u"}}, joinSpec{Source: SourceEvent})
		require.NoError(t, err)
	})

	// The sweep's CAS on the stale row id changes nothing (without the
	// criteria re-check, as for a TTL leave: the row id alone protects).
	e.inTx(func(tx *txn) {
		left, err := tx.leave(e.ctx, b, stale, leaveSpec{Source: SourceReconcile, Reason: ReasonMaxDwell})
		require.NoError(t, err)
		require.Empty(t, left)
	})
	rows := e.memberships("recent", "u")
	require.Len(t, rows, 2)
	require.Equal(t, db.StatusLeft, rows[0].Status)
	require.Equal(t, db.StatusActive, rows[1].Status)
	require.Equal(t, 2, rows[1].EntryCount)
	require.Len(t, e.transitions("u"), 2) // left:1, entered:2
}

func TestLeaveRecheckKeepsAMemberWhoQualifiesAgain(t *testing.T) {
	t.Parallel()
	e := newEnv(t, defs{"buckets/recent.yaml": recentlyActive})
	b := e.bucket("recent")
	e.events("u", "app.active", 8*day)
	e.member("recent", "u", 9*day)
	stale, err := db.CriteriaLeavers(e.ctx, e.db, b, t0)
	require.NoError(t, err)
	e.events("u", "app.active", 0) // qualifies again before the CAS

	e.inTx(func(tx *txn) {
		left, err := tx.leave(e.ctx, b, stale, leaveSpec{Source: SourceReconcile, Reason: ReasonCriteria, Unless: b.Criteria})
		require.NoError(t, err)
		require.Empty(t, left)
	})
	require.Equal(t, db.StatusActive, e.status("recent", "u"))
}

func TestSweepRacingLeaveAndRejoin(t *testing.T) {
	t.Parallel()
	e := newEnv(t, defs{"buckets/recent.yaml": recentlyActive})
	b := e.bucket("recent")
	const users = 200
	ids := dbtest.Users("u", users)
	require.NoError(t, dbtest.InsertUserEvents(e.ctx, e.db, dbtest.Events(ids, "app.active", t0.Add(-8*day))))
	require.NoError(t, dbtest.InsertMemberships(e.ctx, e.db, dbtest.Members(ids, "recent", t0.Add(-9*day))))

	// A real-time writer leaves and re-joins every user while sweeps run.
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 1; i <= users; i++ {
			user := fmt.Sprintf("u%d", i)
			err := e.db.RunInTx(e.ctx, nil, func(ctx context.Context, tx bun.Tx) error {
				rows, err := db.ListMemberships(ctx, tx, db.MembershipFilter{BucketID: "recent", UserID: user, Status: db.StatusActive})
				if err != nil {
					return err
				}
				t := &txn{tx: tx, d: e.deps, now: t0}
				if _, err := t.leave(ctx, b, rows, leaveSpec{Source: SourceEvent, Reason: ReasonCriteria}); err != nil {
					return err
				}
				_, err = t.join(ctx, b, []db.Joiner{{UserID: user}}, joinSpec{Source: SourceEvent})
				return err
			})
			require.NoError(t, err)
		}
	})
	for range 3 {
		wg.Go(func() {
			_, err := Reconcile(e.ctx, e.deps, ReconcileInput{})
			require.NoError(t, err)
		})
	}
	wg.Wait()

	// Every membership row has at most one left event, with its own epoch,
	// and every event belongs to a row.
	var rows []struct {
		UserID     string `bun:"user_id"`
		EntryCount int    `bun:"entry_count"`
		Status     string `bun:"status"`
	}
	require.NoError(t, e.db.NewRaw("SELECT user_id, entry_count, status FROM bucket_memberships").Scan(e.ctx, &rows))
	leftRows := map[string]bool{}
	for _, r := range rows {
		if r.Status == db.StatusLeft {
			leftRows[fmt.Sprintf("bucket:recent:%s:left:%d", r.UserID, r.EntryCount)] = true
		}
	}
	var keys []string
	require.NoError(t, e.db.NewRaw("SELECT idempotency_key FROM user_events WHERE event = 'bucket:left:recent'").Scan(e.ctx, &keys))
	require.Len(t, keys, len(leftRows))
	for _, k := range keys {
		require.True(t, leftRows[k], "event %s has no left row", k)
	}
	require.Equal(t, users, e.count("SELECT count(DISTINCT user_id) FROM bucket_memberships"))
	require.LessOrEqual(t, e.count("SELECT count(*) FROM bucket_memberships WHERE status = 'active'"), users)
}

func TestSeventyThousandLeaversInOneTick(t *testing.T) {
	t.Parallel()
	e := newEnv(t, defs{"buckets/recent.yaml": recentlyActive})
	const n = 70_001
	require.NoError(t, dbtest.InsertMemberships(e.ctx, e.db, dbtest.Members(dbtest.Users("u", n), "recent", t0.Add(-9*day))))

	out := e.sweep(ReconcileInput{})
	require.Equal(t, n, out.bucket("recent").Left)
	require.Equal(t, n, out.Dispatched)
	require.Equal(t, 0, e.count("SELECT count(*) FROM bucket_memberships WHERE status = 'active'"))
	require.Equal(t, n, e.count("SELECT count(*) FROM user_events WHERE event = 'bucket:left:recent'"))
	require.Len(t, e.hatchet.pushedKeys(), n)
}

const winbackJourneys = `
id: winback
name: Win back
trigger: {event: bucket:entered:dormant}
exitOn:
  - event: bucket:left:dormant
`

func TestGenericEventsOnlyWhenAJourneyBindsThem(t *testing.T) {
	t.Parallel()
	for _, bound := range []bool{false, true} {
		t.Run(fmt.Sprint("bound=", bound), func(t *testing.T) {
			t.Parallel()
			files := defs{"buckets/recent.yaml": recentlyActive}
			if bound {
				files["journeys/any-left.yaml"] = "id: any-left\ntrigger: {event: bucket:left}\n"
			}
			e := newEnv(t, files)
			e.events("u", "app.active", 8*day)
			e.member("recent", "u", 9*day)
			e.sweep(ReconcileInput{})

			names := map[string]string{}
			for _, ev := range e.transitions("u") {
				names[ev.Event] = *ev.IdempotencyKey
			}
			want := map[string]string{"bucket:left:recent": "bucket:recent:u:left:1"}
			if bound {
				want["bucket:left"] = "bucket:recent:u:left:1:generic"
			}
			require.Equal(t, want, names)
			require.Len(t, e.hatchet.pushes, len(want))
		})
	}
}

func TestLeaveExitsJourneys(t *testing.T) {
	t.Parallel()
	e := newEnv(t, defs{
		"buckets/dormant.yaml":  wentDormant,
		"journeys/winback.yaml": winbackJourneys,
		"journeys/other.yaml":   "id: other\ntrigger: {event: signup}\nexitOn: [{event: bucket:left:dormant, where: [{property: source, operator: eq, value: event}]}]\n",
	})
	e.contact("u", `{}`)
	e.events("u", "app.active", 30*day, 0) // came back: leaves "dormant"
	e.member("dormant", "u", 20*day)
	require.NoError(t, dbtest.InsertJourneyStates(e.ctx, e.db, []db.JourneyState{
		{UserID: "u", UserEmail: "u@example.com", JourneyID: "winback", CurrentNodeID: "wait", Status: "waiting", HatchetRunID: ptr("run-1")},
		{UserID: "u", UserEmail: "u@example.com", JourneyID: "other", CurrentNodeID: "wait", Status: "active", HatchetRunID: ptr("run-2")},
		{UserID: "someone-else", UserEmail: "s@example.com", JourneyID: "winback", CurrentNodeID: "wait", Status: "active"},
	}))

	require.Equal(t, 1, e.sweep(ReconcileInput{}).Reconciled)
	var states []db.JourneyState
	require.NoError(t, e.db.NewSelect().Model(&states).OrderExpr("js.user_id, js.journey_id").Scan(e.ctx))
	got := map[string]string{}
	for _, s := range states {
		got[s.UserID+"/"+s.JourneyID] = s.Status
	}
	require.Equal(t, map[string]string{
		"u/winback":            "exited",
		"u/other":              "active", // its where (source eq event) does not match a sweep's leave
		"someone-else/winback": "active",
	}, got)
	require.Equal(t, []string{"run-1"}, e.hatchet.cancelled)
}

// inTx runs fn in one transaction of the engine at the test's now, and
// commits it (without what Deps.transact does after a commit).
func (e *env) inTx(fn func(t *txn)) {
	e.t.Helper()
	require.NoError(e.t, e.db.RunInTx(e.ctx, nil, func(_ context.Context, tx bun.Tx) error {
		fn(&txn{tx: tx, d: e.deps, now: e.clock.Now()})
		return nil
	}))
}
