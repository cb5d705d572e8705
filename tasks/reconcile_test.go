package tasks

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bucketworker/bucket-worker/db"
	"github.com/bucketworker/bucket-worker/db/dbtest"
)

const powerUsers = `
id: power
name: Power users
criteria: {type: event, eventName: key.action, check: count, operator: gte, value: 10, within: 30d}
`

func TestCountDecayLeaves(t *testing.T) {
	t.Parallel()
	e := newEnv(t, defs{"buckets/power.yaml": powerUsers})
	ages := func(at time.Duration) []time.Duration {
		out := make([]time.Duration, 10)
		for i := range out {
			out[i] = at
		}
		return out
	}
	e.contact("decays", `{}`)
	e.events("decays", "key.action", ages(25*day)...)
	e.member("power", "decays", 25*day)
	e.contact("stays", `{}`)
	e.events("stays", "key.action", ages(day)...)
	e.member("power", "stays", day)

	out := e.sweep(ReconcileInput{})
	require.Equal(t, 0, out.Reconciled, "both still hold 10 events in the window")

	e.clock.Advance(6 * day) // the 10 events of "decays" are now 31 days old
	out = e.sweep(ReconcileInput{})
	require.Equal(t, 1, out.Reconciled)
	require.Equal(t, 1, out.bucket("power").Left)
	require.Equal(t, db.StatusLeft, e.status("power", "decays"))
	require.Equal(t, db.StatusActive, e.status("power", "stays"))
	row := e.memberships("power", "decays")[0]
	require.Equal(t, t0.Add(6*day), row.LeftAt.UTC())

	events := e.transitions("decays")
	require.Len(t, events, 1)
	ev := events[0]
	require.Equal(t, "bucket:left:power", ev.Event)
	require.Equal(t, "bucket:power:decays:left:1", *ev.IdempotencyKey)
	require.Equal(t, t0.Add(6*day), ev.OccurredAt.UTC())
	require.JSONEq(t, `{"bucketId":"power","bucketName":"Power users","userId":"decays","transition":"left",
		"source":"reconcile","entryCount":1,"reason":"criteria"}`, string(ev.Properties))
	require.Empty(t, e.transitions("stays"))

	// The push went out through the outbox with the payload and metadata of §5.1.
	require.Equal(t, 1, out.Dispatched)
	require.Equal(t, 0, out.Pending)
	require.Len(t, e.hatchet.pushes, 1)
	push := e.hatchet.pushes[0]
	require.Equal(t, "bucket:left:power", push.EventKey)
	require.JSONEq(t, `{"userId":"decays","userEmail":"","properties":{"bucketId":"power","bucketName":"Power users",
		"userId":"decays","transition":"left","source":"reconcile","entryCount":1,"reason":"criteria"}}`, string(push.Payload))
	require.JSONEq(t, `{"bucketId":"power","userId":"decays","transition":"left",
		"idempotencyKey":"bucket:power:decays:left:1"}`, string(push.AdditionalMetadata))

	// A second sweep finds nothing more to do.
	out = e.sweep(ReconcileInput{})
	require.Equal(t, 0, out.Reconciled)
	require.Len(t, e.transitions("decays"), 1)
}

func TestWindowLeaves(t *testing.T) {
	t.Parallel()
	e := newEnv(t, defs{
		"buckets/recent.yaml": "id: recent\nname: Recent\ncriteria: {type: event, eventName: app.active, check: exists, within: 7d}\n",
		"buckets/quiet.yaml":  "id: quiet\nname: Quiet\ncriteria: {type: event, eventName: app.active, check: not_exists, within: 7d}\n",
	})
	// exists within 7d: the member whose last event is 8 days old leaves.
	e.events("gone-quiet", "app.active", 8*day)
	e.member("recent", "gone-quiet", 8*day)
	e.events("still-active", "app.active", 2*day)
	e.member("recent", "still-active", 2*day)
	// not_exists within 7d: the member who came back leaves.
	e.events("came-back", "app.active", 30*day, day)
	e.member("quiet", "came-back", 20*day)
	e.events("still-quiet", "app.active", 30*day)
	e.member("quiet", "still-quiet", 20*day)

	out := e.sweep(ReconcileInput{})
	require.Equal(t, 1, out.bucket("recent").Left)
	require.Equal(t, 1, out.bucket("quiet").Left)
	require.Equal(t, db.StatusLeft, e.status("recent", "gone-quiet"))
	require.Equal(t, db.StatusActive, e.status("recent", "still-active"))
	require.Equal(t, db.StatusLeft, e.status("quiet", "came-back"))
	require.Equal(t, db.StatusActive, e.status("quiet", "still-quiet"))
	require.Equal(t, "bucket:quiet:came-back:left:1", *e.transitions("came-back")[0].IdempotencyKey)
}

func TestMaxDwellLeavesWhileCriteriaHold(t *testing.T) {
	t.Parallel()
	e := newEnv(t, defs{"buckets/trial.yaml": `
id: trial
name: Trial
criteria: {type: property, property: plan, operator: eq, value: trial}
maxDwell: 14d
`})
	e.contact("expired", `{"plan":"trial"}`)
	old := e.member("trial", "expired", 15*day)
	old.MaxDwellAt = ptr(t0.Add(-day))
	e.update(old)
	e.contact("fresh", `{"plan":"trial"}`)
	fresh := e.member("trial", "fresh", day)
	fresh.MaxDwellAt = ptr(t0.Add(13 * day))
	e.update(fresh)

	out := e.sweep(ReconcileInput{})
	require.Equal(t, 1, out.bucket("trial").TTLLeft)
	require.Equal(t, 0, out.bucket("trial").Left)
	require.Equal(t, db.StatusLeft, e.status("trial", "expired"))
	require.Equal(t, db.StatusActive, e.status("trial", "fresh"))
	var props map[string]any
	require.NoError(t, json.Unmarshal(e.transitions("expired")[0].Properties, &props))
	require.Equal(t, "maxDwell", props["reason"])
	require.Equal(t, "reconcile", props["source"])
}

func TestMinDwellDefersTheLeave(t *testing.T) {
	t.Parallel()
	e := newEnv(t, defs{"buckets/hot.yaml": `
id: hot
name: Hot
criteria: {type: event, eventName: app.active, check: exists, within: 1h}
minDwell: 1d
`})
	e.events("u", "app.active", 2*time.Hour)
	m := e.member("hot", "u", 2*time.Hour)

	out := e.sweep(ReconcileInput{})
	require.Equal(t, 0, out.Reconciled, "inside minDwell the member stays")
	require.Equal(t, 1, out.bucket("hot").Deferred)
	require.Equal(t, db.StatusActive, e.status("hot", "u"))
	require.Equal(t, m.EnteredAt.Add(day), e.memberships("hot", "u")[0].ExpiresAt.UTC(),
		"the deferral is scheduled at entered_at + minDwell")

	e.clock.Advance(21 * time.Hour) // 23h after entering: still inside
	require.Equal(t, 0, e.sweep(ReconcileInput{}).Reconciled)
	e.clock.Advance(time.Hour) // exactly minDwell after entering
	out = e.sweep(ReconcileInput{})
	require.Equal(t, 1, out.Reconciled)
	require.Equal(t, db.StatusLeft, e.status("hot", "u"))
	require.Len(t, e.transitions("u"), 1)
}

func TestDeferredPassCompletesAPostponedLeave(t *testing.T) {
	t.Parallel()
	// Not time-based: only the deferred pass can complete a leave that a
	// real-time evaluation postponed.
	e := newEnv(t, defs{"buckets/vip.yaml": `
id: vip
name: VIP
criteria: {type: property, property: tier, operator: eq, value: gold}
minDwell: 2d
`})
	e.contact("downgraded", `{"tier":"silver"}`)
	d := e.member("vip", "downgraded", day)
	d.ExpiresAt = ptr(d.EnteredAt.Add(2 * day))
	e.update(d)
	e.contact("regained", `{"tier":"gold"}`)
	r := e.member("vip", "regained", day)
	r.ExpiresAt = ptr(r.EnteredAt.Add(2 * day))
	e.update(r)

	require.Equal(t, 0, e.sweep(ReconcileInput{}).Reconciled, "not due yet")
	e.clock.Advance(day)
	out := e.sweep(ReconcileInput{})
	require.Equal(t, 1, out.bucket("vip").DeferredLeft)
	require.Equal(t, db.StatusLeft, e.status("vip", "downgraded"))
	require.Equal(t, db.StatusActive, e.status("vip", "regained"), "criteria hold again: no leave")
}

func TestDeletedContactsAreNeverTouched(t *testing.T) {
	t.Parallel()
	e := newEnv(t, defs{
		"buckets/recent.yaml": "id: recent\nname: Recent\ncriteria: {type: event, eventName: app.active, check: exists, within: 7d}\nmaxDwell: 1d\n",
		"buckets/lapsed.yaml": "id: lapsed\nname: Lapsed\ncriteria: {type: event, eventName: app.active, check: not_exists, within: 7d}\n",
	})
	e.backfilled("lapsed")
	e.contact("erased", `{}`)
	e.events("erased", "app.active", 30*day)
	m := e.member("recent", "erased", 30*day) // should leave by criteria and by TTL
	m.MaxDwellAt = ptr(t0.Add(-day))
	e.update(m)
	e.setDeleted("erased", &t0)

	out := e.sweep(ReconcileInput{})
	require.Equal(t, 0, out.Reconciled)
	require.Equal(t, 0, out.Joined, "an erased lapsed user is not a join candidate")
	require.Equal(t, db.StatusActive, e.status("recent", "erased"))
	require.Equal(t, "none", e.status("lapsed", "erased"))
	require.Empty(t, e.transitions("erased"))
	require.Empty(t, e.hatchet.pushes)
}

const proAndActive = `
id: engaged-pro
name: Engaged pro
criteria:
  type: composite
  operator: and
  conditions:
    - {type: property, property: plan, operator: eq, value: pro}
    - {type: event, eventName: app.active, check: exists, within: 7d}
`

func TestCompositeReadsContactProperties(t *testing.T) {
	t.Parallel()
	e := newEnv(t, defs{"buckets/engaged-pro.yaml": proAndActive})
	e.contact("pro-active", `{"plan":"pro"}`)
	e.events("pro-active", "app.active", day)
	e.member("engaged-pro", "pro-active", week)
	e.contact("free-active", `{"plan":"free"}`)
	e.events("free-active", "app.active", day)
	e.member("engaged-pro", "free-active", week)
	e.contact("pro-quiet", `{"plan":"pro"}`)
	e.events("pro-quiet", "app.active", 8*day)
	e.member("engaged-pro", "pro-quiet", week)

	out := e.sweep(ReconcileInput{})
	rep := out.bucket("engaged-pro")
	require.Equal(t, 3, rep.Evaluated)
	require.Equal(t, 2, rep.Left)
	require.Equal(t, db.StatusActive, e.status("engaged-pro", "pro-active"), "the property leg reads the contact")
	require.Equal(t, db.StatusLeft, e.status("engaged-pro", "free-active"))
	require.Equal(t, db.StatusLeft, e.status("engaged-pro", "pro-quiet"))
}

func TestCompositeLoopCoversEveryMember(t *testing.T) {
	t.Parallel()
	e := newEnv(t, defs{"buckets/engaged-pro.yaml": proAndActive})
	const n = 3*ReconcileBatch + 7
	users := dbtest.Users("u", n)
	contacts := dbtest.Contacts(users, `{"plan":"pro"}`)
	contacts[n-1].Properties = json.RawMessage(`{"plan":"free"}`)
	require.NoError(t, dbtest.InsertContacts(e.ctx, e.db, contacts))
	require.NoError(t, dbtest.InsertUserEvents(e.ctx, e.db, dbtest.Events(users, "app.active", t0.Add(-day))))
	require.NoError(t, dbtest.InsertMemberships(e.ctx, e.db, dbtest.Members(users, "engaged-pro", t0.Add(-day))))

	rep := e.sweep(ReconcileInput{}).bucket("engaged-pro")
	require.Equal(t, n, rep.Evaluated, "one sweep evaluates every member once, not one batch")
	require.Equal(t, 1, rep.Left)
	require.Equal(t, db.StatusLeft, e.status("engaged-pro", fmt.Sprintf("u%d", n)))
	require.Equal(t, n, e.count("SELECT count(*) FROM bucket_memberships WHERE last_evaluated_at = ?", t0))

	e.clock.Advance(time.Minute)
	require.Equal(t, n-1, e.sweep(ReconcileInput{}).bucket("engaged-pro").Evaluated)
}

const wentDormant = `
id: dormant
name: Went dormant
criteria:
  type: composite
  operator: and
  conditions:
    - {type: event, eventName: app.active, check: exists}
    - {type: event, eventName: app.active, check: not_exists, within: 7d}
`

func TestAbsenceJoins(t *testing.T) {
	t.Parallel()
	e := newEnv(t, defs{
		"buckets/dormant.yaml": wentDormant,
		"buckets/quiet.yaml":   "id: quiet\nname: Quiet\nentryLimit: once\ncriteria: {type: event, eventName: app.active, check: not_exists, within: 7d}\n",
	})
	e.backfilled("dormant")
	e.backfilled("quiet")
	e.contact("never-active", `{}`)
	e.contact("lapsed", `{}`)
	e.events("lapsed", "app.active", 10*day)
	e.contact("active", `{}`)
	e.events("active", "app.active", 10*day, day)
	e.contact("returning", `{}`) // left "quiet" before; entryLimit once
	e.events("returning", "app.active", 10*day)
	e.left("quiet", "returning", t0.Add(-40*day), t0.Add(-20*day))

	out := e.sweep(ReconcileInput{})
	require.Equal(t, 2, out.bucket("dormant").Joined) // lapsed and returning
	require.Equal(t, 2, out.bucket("quiet").Joined)
	require.Equal(t, "none", e.status("dormant", "never-active"), "the everFired floor")
	require.Equal(t, "none", e.status("quiet", "never-active"), "the everFired floor applies to the single absence leg too")
	require.Equal(t, "none", e.status("dormant", "active"))
	require.Equal(t, db.StatusActive, e.status("dormant", "lapsed"))

	lapsed := e.memberships("dormant", "lapsed")[0]
	require.Equal(t, "reconcile", *lapsed.Source)
	require.Equal(t, 1, lapsed.EntryCount)
	require.Equal(t, "lapsed@example.com", *lapsed.UserEmail, "the email is trimmed and lower-cased")
	require.Equal(t, t0.Add(week), lapsed.ExpiresAt.UTC(), "a time-based join expires after the first window")
	keys := map[string]bool{}
	for _, ev := range e.transitions("lapsed") {
		keys[*ev.IdempotencyKey] = true
	}
	require.Equal(t, map[string]bool{"bucket:dormant:lapsed:entered:1": true, "bucket:quiet:lapsed:entered:1": true}, keys)

	returning := e.memberships("quiet", "returning")
	require.Len(t, returning, 2)
	require.Equal(t, db.StatusActive, returning[1].Status)
	require.Equal(t, 2, returning[1].EntryCount, "the row is written and the epoch advances")
	for _, ev := range e.transitions("returning") {
		require.NotEqual(t, "bucket:entered:quiet", ev.Event, "entryLimit once: no event")
	}

	// Joined once: the next sweep finds them members already.
	e.clock.Advance(time.Minute)
	out = e.sweep(ReconcileInput{})
	require.Equal(t, 0, out.Joined)
	require.Len(t, e.transitions("lapsed"), 2)
}

func TestJoinPassWaitsForTheBackfill(t *testing.T) {
	t.Parallel()
	e := newEnv(t, defs{"buckets/dormant.yaml": wentDormant})
	e.contact("lapsed", `{}`)
	e.events("lapsed", "app.active", 10*day)

	rep := e.sweep(ReconcileInput{}).bucket("dormant")
	require.Equal(t, "backfill_missing", rep.JoinsSkipped)
	require.Equal(t, 0, rep.Joined)

	require.NoError(t, db.SetCriteriaHash(e.ctx, e.db, "dormant", "an-older-criteria-hash", t0))
	require.Equal(t, "criteria_changed", e.sweep(ReconcileInput{}).bucket("dormant").JoinsSkipped)

	e.backfilled("dormant")
	job, err := db.CreateBackfillJob(e.ctx, e.db, "dormant", db.FormatReeval, db.JobProcessing, t0)
	require.NoError(t, err)
	require.Equal(t, "backfill_running", e.sweep(ReconcileInput{}).bucket("dormant").JoinsSkipped)
	require.Equal(t, "none", e.status("dormant", "lapsed"))

	require.NoError(t, db.SetJobStatus(e.ctx, e.db, job.ID, db.JobCompleted, 0, t0))
	rep = e.sweep(ReconcileInput{}).bucket("dormant")
	require.Empty(t, rep.JoinsSkipped)
	require.Equal(t, 1, rep.Joined)
}

func TestDormantUserBehindManyActiveContactsIsFound(t *testing.T) {
	t.Parallel()
	e := newEnv(t, defs{"buckets/dormant.yaml": wentDormant})
	e.backfilled("dormant")
	// 1 200 active contacts whose ids sort before the one dormant user's.
	active := dbtest.Users("active-", 1200)
	contacts := dbtest.Contacts(append(active, "dormant-one"), `{}`)
	for i := range active {
		contacts[i].ID = fmt.Sprintf("00000000-0000-0000-0000-%012d", i+1)
	}
	contacts[len(active)].ID = "ffffffff-0000-0000-0000-000000000000"
	require.NoError(t, dbtest.InsertContacts(e.ctx, e.db, contacts))
	require.NoError(t, dbtest.InsertUserEvents(e.ctx, e.db, dbtest.Events(active, "app.active", t0.Add(-day))))
	e.events("dormant-one", "app.active", 9*day)

	rep := e.sweep(ReconcileInput{}).bucket("dormant")
	require.Equal(t, 1, rep.Joined)
	require.Equal(t, db.StatusActive, e.status("dormant", "dormant-one"))
}

func TestReentrantCyclesGetTheirOwnEpochs(t *testing.T) {
	t.Parallel()
	e := newEnv(t, defs{"buckets/quiet.yaml": "id: quiet\nname: Quiet\ncriteria: {type: event, eventName: app.active, check: not_exists, within: 7d}\n"})
	e.backfilled("quiet")
	e.contact("u", `{}`)
	e.events("u", "app.active", 8*day)
	for cycle := 1; cycle <= 3; cycle++ {
		require.Equal(t, 1, e.sweep(ReconcileInput{}).Joined, "cycle %d", cycle)
		e.events("u", "app.active", 0)
		require.Equal(t, 1, e.sweep(ReconcileInput{}).Reconciled, "cycle %d", cycle)
		e.clock.Advance(8 * day)
	}
	rows := e.memberships("quiet", "u")
	require.Len(t, rows, 3)
	for i, r := range rows {
		require.Equal(t, db.StatusLeft, r.Status)
		require.Equal(t, i+1, r.EntryCount)
	}
	keys := map[string]bool{}
	for _, ev := range e.transitions("u") {
		keys[*ev.IdempotencyKey] = true
	}
	require.Equal(t, map[string]bool{
		"bucket:quiet:u:entered:1": true, "bucket:quiet:u:left:1": true,
		"bucket:quiet:u:entered:2": true, "bucket:quiet:u:left:2": true,
		"bucket:quiet:u:entered:3": true, "bucket:quiet:u:left:3": true,
	}, keys)
	require.Len(t, e.hatchet.pushedKeys(), 6)
}

func TestParseReconcileInput(t *testing.T) {
	t.Parallel()
	for payload, want := range map[string]ReconcileInput{
		``: {}, `null`: {}, `{}`: {},
		`{"bucketIds":["a","b"],"dryRun":true}`: {BucketIDs: []string{"a", "b"}, DryRun: true},
	} {
		in, err := ParseReconcileInput([]byte(payload))
		require.NoError(t, err, payload)
		require.Equal(t, want, in, payload)
	}
	for _, bad := range []string{`{"bucketIds":"a"}`, `{"bucket":"a"}`, `[1]`, `{"dryRun":"yes"}`} {
		_, err := ParseReconcileInput([]byte(bad))
		require.ErrorIs(t, err, ErrInvalidInput, bad)
	}
}
