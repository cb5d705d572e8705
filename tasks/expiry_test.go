package tasks

import (
	"context"
	"encoding/json"
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

const activeNow = "id: active-now\nname: Active now\nfastExpiry: true\n" +
	"criteria: {type: event, eventName: app.active, check: exists, within: 15m}\n"

// armed returns the bucket:arm-expiry payloads in the outbox, by row id.
func (e *env) armed() map[string]ArmedExpiry {
	e.t.Helper()
	rows, err := dbtest.ListOutbox(e.ctx, e.db)
	require.NoError(e.t, err)
	out := map[string]ArmedExpiry{}
	for _, r := range rows {
		if r.EventKey != ArmExpiryEvent {
			continue
		}
		a, err := ParseArmExpiry(r.Payload)
		require.NoError(e.t, err)
		require.Equal(e.t, "arm:"+a.RowID, *r.IdempotencyKey)
		out[a.RowID] = a
	}
	return out
}

func (e *env) expire(a ArmedExpiry) ExpiryResult {
	e.t.Helper()
	res, err := Expire(e.ctx, e.deps, a)
	require.NoError(e.t, err)
	return res
}

func TestJoinArmsExpiryWithTheStoredDeadline(t *testing.T) {
	t.Parallel()
	e := newEnv(t, defs{"buckets/active-now.yaml": activeNow})
	e.clock.Advance(123456789 * time.Nanosecond) // sub-microsecond: Postgres rounds it
	e.ingest("app.active", `{"userId":"u","userEmail":"u@x.io"}`)
	row := e.memberships("active-now", "u")[0]
	arms := e.armed()
	require.Len(t, arms, 1)
	a := arms[row.ID]
	require.Equal(t, "active-now", a.BucketID)
	require.Equal(t, "u", a.UserID)
	require.Equal(t, "u@x.io", a.UserEmail)
	require.True(t, a.ExpiresAt.Equal(*row.ExpiresAt), "armedExpiresAt is the stored value: %s vs %s", a.ArmedExpiresAt, row.ExpiresAt)
	require.InDelta(t, 15*60*1000, a.MsUntilExpiry, 1, "until the stored deadline")
	var timers []db.ExpiryTimer
	require.NoError(t, e.db.NewSelect().Model(&timers).Scan(e.ctx))
	require.Len(t, timers, 1, "the join armed the timer in its own transaction")
	require.Equal(t, row.ID, timers[0].RowID)
	require.True(t, timers[0].FiresAt.Equal(*row.ExpiresAt))
}

func TestSweepJoinsArmExpiryToo(t *testing.T) {
	t.Parallel()
	e := newEnv(t, defs{"buckets/fresh.yaml": `
id: fresh
name: Fresh but not paying
reconcileJoins: true
fastExpiry: true
criteria:
  type: composite
  operator: and
  conditions:
    - {type: event, eventName: visit, check: exists, within: 1d}
    - {type: event, eventName: purchase, check: not_exists, within: 7d}
`})
	e.backfilled("fresh")
	e.contact("u", `{}`)
	e.events("u", "visit", time.Hour)
	require.Equal(t, 1, e.sweep(ReconcileInput{}).Joined)
	row := e.memberships("fresh", "u")[0]
	a, ok := e.armed()[row.ID]
	require.True(t, ok, "the sweep's join arms a timer")
	require.Equal(t, t0.Add(day), a.ExpiresAt.UTC())
}

func TestExpiryOutcomes(t *testing.T) {
	t.Parallel()
	e := newEnv(t, defs{"buckets/active-now.yaml": activeNow})
	e.contact("u", `{}`)
	e.ingest("app.active", `{"userId":"u"}`)
	row := e.memberships("active-now", "u")[0]
	a := e.armed()[row.ID]

	require.Equal(t, ExpiryResult{Status: "skipped", Reason: ReasonStillMember}, e.expire(a), "woken early, the event is still in the window")

	e.clock.Advance(16 * time.Minute)
	unknown := a
	unknown.BucketID = "gone"
	require.Equal(t, ExpiryResult{Status: "skipped", Reason: ReasonBucketUnregistered}, e.expire(unknown))

	stale := a
	stale.ExpiresAt = a.ExpiresAt.Add(-time.Minute) // an older arming of the same row
	require.Equal(t, ExpiryResult{Status: "skipped", Reason: ReasonReArmed}, e.expire(stale))
	require.Equal(t, db.StatusActive, e.status("active-now", "u"), "a stale timer leaves nobody")

	require.NoError(t, e.deps.Switch.Set(e.ctx, "active-now", false, t0))
	require.Equal(t, ExpiryResult{Status: "skipped", Reason: ReasonBucketDisabled}, e.expire(a))
	require.NoError(t, e.deps.Switch.Set(e.ctx, "active-now", true, t0))

	e.setDeleted("u", &t0)
	require.Equal(t, ExpiryResult{Status: "skipped", Reason: ReasonContactDeleted}, e.expire(a))
	e.setDeleted("u", nil)

	require.Equal(t, ExpiryResult{Status: "left", RowID: row.ID}, e.expire(a))
	require.Equal(t, db.StatusLeft, e.status("active-now", "u"))
	events := e.transitions("u")
	require.Equal(t, "bucket:active-now:u:left:1", *events[len(events)-1].IdempotencyKey)
	var props map[string]any
	require.NoError(t, json.Unmarshal(events[len(events)-1].Properties, &props))
	require.Equal(t, "reconcile", props["source"])
	require.Equal(t, "criteria", props["reason"])

	require.Equal(t, ExpiryResult{Status: "skipped", Reason: ReasonReArmed}, e.expire(a), "already left")
	require.Len(t, e.transitions("u"), 2)
}

func TestStaleTimerDoesNotLeaveARejoinedUser(t *testing.T) {
	t.Parallel()
	e := newEnv(t, defs{"buckets/active-now.yaml": activeNow})
	e.ingest("app.active", `{"userId":"u"}`)
	first := e.memberships("active-now", "u")[0]
	firstArm := e.armed()[first.ID]
	e.clock.Advance(20 * time.Minute)
	e.sweep(ReconcileInput{}) // the sweep left the user first
	e.ingest("app.active", `{"userId":"u"}`)
	e.clock.Advance(20 * time.Minute) // the new membership's window is over too

	require.Equal(t, ExpiryResult{Status: "skipped", Reason: ReasonReArmed}, e.expire(firstArm))
	rows := e.memberships("active-now", "u")
	require.Equal(t, db.StatusActive, rows[1].Status, "the first timer never touches the second membership")
	second := e.armed()[rows[1].ID]
	require.Equal(t, ExpiryResult{Status: "left", RowID: rows[1].ID}, e.expire(second))
	require.Equal(t, "bucket:active-now:u:left:2", *e.transitions("u")[3].IdempotencyKey)
}

func TestParseArmExpiry(t *testing.T) {
	t.Parallel()
	valid := `{"rowId":"6f1c2a4e-0000-4000-8000-000000000001","bucketId":"b","userId":"u","userEmail":"",
		"armedExpiresAt":"2026-11-29T12:15:00.123456Z","msUntilExpiry":1500}`
	a, err := ParseArmExpiry([]byte(valid))
	require.NoError(t, err)
	require.Equal(t, time.Date(2026, 11, 29, 12, 15, 0, 123456000, time.UTC), a.ExpiresAt.UTC())
	for _, bad := range []string{
		`[]`, `{"rowId":"x","bucketId":"b","userId":"u","armedExpiresAt":"2026-11-29T12:15:00Z"}`,
		`{"rowId":"6f1c2a4e-0000-4000-8000-000000000001","userId":"u","armedExpiresAt":"2026-11-29T12:15:00Z"}`,
		`{"rowId":"6f1c2a4e-0000-4000-8000-000000000001","bucketId":"b","armedExpiresAt":"2026-11-29T12:15:00Z"}`,
		`{"rowId":"6f1c2a4e-0000-4000-8000-000000000001","bucketId":"b","userId":"u","armedExpiresAt":"soon"}`,
		`{"rowId":"6f1c2a4e-0000-4000-8000-000000000001","bucketId":"b","userId":"u","armedExpiresAt":"2026-11-29T12:15:00Z","msUntilExpiry":"x"}`,
	} {
		_, err := ParseArmExpiry([]byte(bad))
		require.ErrorIs(t, err, ErrInvalidInput, bad)
	}
}

func (e *env) timers() []db.ExpiryTimer {
	e.t.Helper()
	var rows []db.ExpiryTimer
	require.NoError(e.t, e.db.NewSelect().Model(&rows).OrderExpr("t.fires_at").Scan(e.ctx))
	return rows
}

// TestTimersFireAtTheirDeadline arms two timers a minute apart: a round of
// FireDueTimers fires nothing early, then exactly the timer that is due.
func TestTimersFireAtTheirDeadline(t *testing.T) {
	t.Parallel()
	e := newEnv(t, defs{"buckets/active-now.yaml": activeNow})
	e.ingest("app.active", `{"userId":"first"}`)
	e.clock.Advance(time.Minute)
	e.ingest("app.active", `{"userId":"second"}`)
	require.Len(t, e.timers(), 2)

	e.clock.Advance(14 * time.Minute) // first's deadline: its event is at the window's edge, still in
	fired, err := FireDueTimers(e.ctx, e.deps)
	require.NoError(t, err)
	require.Zero(t, fired, "a timer fires once its instant has passed")
	require.Equal(t, db.StatusActive, e.status("active-now", "first"))

	e.clock.Advance(time.Microsecond)
	fired, err = FireDueTimers(e.ctx, e.deps)
	require.NoError(t, err)
	require.Equal(t, 1, fired)
	require.Equal(t, db.StatusLeft, e.status("active-now", "first"))
	require.Equal(t, db.StatusActive, e.status("active-now", "second"))
	row := e.memberships("active-now", "first")[0]
	require.Equal(t, time.Microsecond, row.LeftAt.Sub(*row.ExpiresAt), "left just after the deadline")
	left := e.transitions("first")[1]
	require.Equal(t, "bucket:active-now:first:left:1", *left.IdempotencyKey)
	require.Contains(t, string(left.Properties), `"source": "reconcile"`)
	require.Len(t, e.timers(), 1, "the fired timer is gone, the other still armed")
	require.Equal(t, "second", e.timers()[0].UserID)
	require.Equal(t, 1, e.hatchet.pushedKeys()["bucket:active-now:first:left:1"], "the leave was pushed")
}

// TestArmFromAPush covers bucket-expiry: the worker's own arm finds its
// timer armed already; an arm pushed by another producer is armed; an arm
// delivered after its deadline fires at once.
func TestArmFromAPush(t *testing.T) {
	t.Parallel()
	e := newEnv(t, defs{"buckets/active-now.yaml": activeNow})
	e.ingest("app.active", `{"userId":"u"}`)
	row := e.memberships("active-now", "u")[0]
	a := e.armed()[row.ID]

	res, err := HandleArm(e.ctx, e.deps, a)
	require.NoError(t, err)
	require.Equal(t, StatusArmed, res.Status)
	require.True(t, res.FiresAt.Equal(*row.ExpiresAt))
	require.Len(t, e.timers(), 1, "armed once")

	require.NoError(t, dbtest.DeleteAll(e.ctx, e.db, (*db.ExpiryTimer)(nil)))
	res, err = HandleArm(e.ctx, e.deps, a)
	require.NoError(t, err)
	require.Equal(t, StatusArmed, res.Status)
	require.Len(t, e.timers(), 1, "an arm from the push alone is armed")

	e.clock.Advance(16 * time.Minute) // delivered late
	res, err = HandleArm(e.ctx, e.deps, a)
	require.NoError(t, err)
	require.Equal(t, ExpiryResult{Status: StatusLeft, RowID: row.ID}, res)
	require.Empty(t, e.timers())
	require.Equal(t, db.StatusLeft, e.status("active-now", "u"))
}

// TestReplicasShareTimers fires 2 500 due timers from three replicas at
// once: each member leaves once, each leave is pushed once.
func TestReplicasShareTimers(t *testing.T) {
	t.Parallel()
	e := newEnv(t, defs{"buckets/active-now.yaml": activeNow})
	const n = 2500
	users := make([]db.Joiner, n)
	for i := range users {
		users[i] = db.Joiner{UserID: fmt.Sprintf("u%04d", i)}
		e.events(users[i].UserID, "app.active", 0)
	}
	b := e.bucket("active-now")
	for chunk := range slices.Chunk(users, 500) {
		_, err := e.deps.transact(e.ctx, e.clock.Now(), func(ctx context.Context, t *txn) error {
			_, err := t.join(ctx, b, chunk, joinSpec{Source: SourceEvent})
			return err
		})
		require.NoError(t, err)
	}
	e.clock.Advance(time.Hour)

	replicas := make([]*env, 3)
	for i := range replicas {
		replicas[i] = newEnvOn(t, e.db, e.clock, defs{"buckets/active-now.yaml": activeNow})
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	total := 0
	for _, r := range replicas {
		wg.Go(func() {
			fired, err := FireDueTimers(r.ctx, r.deps)
			require.NoError(t, err)
			mu.Lock()
			total += fired
			mu.Unlock()
		})
	}
	wg.Wait()
	require.Equal(t, n, total, "every timer fired once")
	require.Equal(t, n, e.count("SELECT count(*) FROM bucket_memberships WHERE status = 'left'"))
	require.Equal(t, n, e.count("SELECT count(DISTINCT idempotency_key) FROM user_events WHERE event = 'bucket:left:active-now'"))
	require.Equal(t, n, e.count("SELECT count(*) FROM user_events WHERE event = 'bucket:left:active-now'"))
	pushed := 0
	for _, r := range replicas {
		for key, times := range r.hatchet.pushedKeys() {
			if strings.Contains(key, ":left:") {
				require.Equal(t, 1, times, key)
				pushed++
			}
		}
	}
	require.Equal(t, n, pushed, "each leave pushed by one replica")
}
