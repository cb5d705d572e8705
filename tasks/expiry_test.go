package tasks

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bucketworker/bucket-worker/db"
)

const activeNow = "id: active-now\nname: Active now\nfastExpiry: true\n" +
	"criteria: {type: event, eventName: app.active, check: exists, within: 15m}\n"

// armed returns the bucket:arm-expiry payloads in the outbox, by row id.
func (e *env) armed() map[string]ArmedExpiry {
	e.t.Helper()
	rows, err := db.ListOutbox(e.ctx, e.db)
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
	require.Equal(t, 900*time.Second, a.Sleep())
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

	require.Equal(t, ExpiryResult{Status: "skipped", Reason: SkipStillMember}, e.expire(a), "woken early, the event is still in the window")

	e.clock.Advance(16 * time.Minute)
	unknown := a
	unknown.BucketID = "gone"
	require.Equal(t, ExpiryResult{Status: "skipped", Reason: SkipUnregistered}, e.expire(unknown))

	stale := a
	stale.ExpiresAt = a.ExpiresAt.Add(-time.Minute) // an older arming of the same row
	require.Equal(t, ExpiryResult{Status: "skipped", Reason: SkipReArmed}, e.expire(stale))
	require.Equal(t, db.StatusActive, e.status("active-now", "u"), "a stale timer leaves nobody")

	require.NoError(t, e.deps.Switch.Set(e.ctx, "active-now", false, t0))
	require.Equal(t, ExpiryResult{Status: "skipped", Reason: SkipDisabled}, e.expire(a))
	require.NoError(t, e.deps.Switch.Set(e.ctx, "active-now", true, t0))

	e.exec("UPDATE contacts SET deleted_at = ? WHERE external_id = 'u'", t0)
	require.Equal(t, ExpiryResult{Status: "skipped", Reason: SkipDeleted}, e.expire(a))
	e.exec("UPDATE contacts SET deleted_at = NULL WHERE external_id = 'u'")

	require.Equal(t, ExpiryResult{Status: "left", RowID: row.ID}, e.expire(a))
	require.Equal(t, db.StatusLeft, e.status("active-now", "u"))
	events := e.transitions("u")
	require.Equal(t, "bucket:active-now:u:left:1", *events[len(events)-1].IdempotencyKey)
	var props map[string]any
	require.NoError(t, json.Unmarshal(events[len(events)-1].Properties, &props))
	require.Equal(t, "reconcile", props["source"])
	require.Equal(t, "criteria", props["reason"])

	require.Equal(t, ExpiryResult{Status: "skipped", Reason: SkipReArmed}, e.expire(a), "already left")
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

	require.Equal(t, ExpiryResult{Status: "skipped", Reason: SkipReArmed}, e.expire(firstArm))
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
	require.Equal(t, 2*time.Second, a.Sleep(), "whole seconds, rounded up")
	for ms, want := range map[int64]time.Duration{0: time.Second, -5000: time.Second, 1000: time.Second, 1001: 2 * time.Second} {
		a.MsUntilExpiry = ms
		require.Equal(t, want, a.Sleep(), "ms %d", ms)
	}
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
