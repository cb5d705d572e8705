package tasks

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bucketworker/bucket-worker/db"
)

// The sweep and the backfill over the criteria of contract §3.5 and §3.6:
// event filters, aggregates and relative dates.

const trialEndingSoon = `
id: trial-ending-soon
name: Trial ending soon
criteria:
  type: composite
  operator: and
  conditions:
    - {type: property, property: plan, operator: eq, value: trial}
    - {type: property, property: trial_ends_at, operator: within_next, value: 3d}
`

const proBuyers = `
id: pro-buyers
name: Pro buyers
criteria:
  type: event
  eventName: purchase
  check: count
  operator: gte
  value: 2
  within: 30d
  where: [{property: plan, operator: eq, value: pro}]
`

const bigSpenders = `
id: big-spenders
name: Big spenders
criteria: {type: event, eventName: purchase, check: sum, property: amount, operator: gte, value: 100, within: 30d}
`

// purchases stores one purchase per age with the properties (JSON).
func (e *env) purchases(userID, props string, ages ...time.Duration) {
	e.t.Helper()
	e.eventsWith(userID, "purchase", props, ages...)
}

// A within_next bucket gains members as their dates come into range, with
// no event at all, and loses them when the date has passed.
func TestRelativeDateJoinsAndLeavesByTheClock(t *testing.T) {
	t.Parallel()
	e := newEnv(t, defs{"buckets/trial.yaml": trialEndingSoon})
	e.backfilled("trial-ending-soon")
	e.contact("soon", `{"plan":"trial","trial_ends_at":"2026-12-01T12:00:00Z"}`) // t0 + 2d
	e.contact("later", `{"plan":"trial","trial_ends_at":"2026-12-06"}`)          // t0 + 6.5d
	e.contact("paid", `{"plan":"pro","trial_ends_at":"2026-12-01T12:00:00Z"}`)
	e.contact("garbled", `{"plan":"trial","trial_ends_at":"next week"}`)

	out := e.sweep(ReconcileInput{})
	require.Equal(t, 1, out.bucket("trial-ending-soon").Joined)
	require.Equal(t, db.StatusActive, e.status("trial-ending-soon", "soon"))
	soon := e.memberships("trial-ending-soon", "soon")[0]
	require.Equal(t, "reconcile", *soon.Source)
	require.Equal(t, time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC), soon.ExpiresAt.UTC(), "expires_at is the date itself")
	require.Equal(t, "none", e.status("trial-ending-soon", "later"))
	require.Equal(t, "none", e.status("trial-ending-soon", "paid"))
	require.Equal(t, "none", e.status("trial-ending-soon", "garbled"))

	// Four days on: "later" is within three days of its date, "soon" is past.
	e.clock.Advance(4 * day)
	out = e.sweep(ReconcileInput{})
	require.Equal(t, 1, out.bucket("trial-ending-soon").Joined)
	require.Equal(t, 1, out.bucket("trial-ending-soon").Left)
	require.Equal(t, db.StatusActive, e.status("trial-ending-soon", "later"))
	require.Equal(t, time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC), e.memberships("trial-ending-soon", "later")[0].ExpiresAt.UTC())
	require.Equal(t, db.StatusLeft, e.status("trial-ending-soon", "soon"))
	keys := map[string]int{}
	for _, ev := range append(e.transitions("soon"), e.transitions("later")...) {
		keys[*ev.IdempotencyKey]++
	}
	require.Equal(t, map[string]int{
		"bucket:trial-ending-soon:soon:entered:1": 1, "bucket:trial-ending-soon:soon:left:1": 1,
		"bucket:trial-ending-soon:later:entered:1": 1,
	}, keys)

	// The same clock again changes nothing.
	out = e.sweep(ReconcileInput{})
	require.Zero(t, out.Joined+out.Reconciled)
}

// A single relative-date leg leaves set-based, and joins with no everFired
// floor: there is no event to have fired.
func TestSingleRelativeDateLeg(t *testing.T) {
	t.Parallel()
	e := newEnv(t, defs{"buckets/recent.yaml": "id: recent\nname: Recent\ncriteria: {type: property, property: last_seen_at, operator: within_last, value: 1d}\n"})
	e.backfilled("recent")
	e.contact("seen", `{"last_seen_at":"2026-11-29T06:00:00Z"}`) // t0 - 6h
	e.contact("gone", `{"last_seen_at":"2026-11-20"}`)

	out := e.sweep(ReconcileInput{})
	require.Equal(t, 1, out.bucket("recent").Joined)
	require.Equal(t, time.Date(2026, 11, 30, 6, 0, 0, 0, time.UTC), e.memberships("recent", "seen")[0].ExpiresAt.UTC(), "t + D")
	e.clock.Advance(19 * time.Hour) // the window's far bound passes at t0 + 18h
	out = e.sweep(ReconcileInput{})
	require.Equal(t, 1, out.bucket("recent").Left)
	require.Zero(t, out.bucket("recent").Evaluated, "a single leg leaves set-based, not member by member")
	require.Equal(t, db.StatusLeft, e.status("recent", "seen"))
	require.Equal(t, "none", e.status("recent", "gone"))
}

// A where count bucket loses a member whose matching events aged out, even
// though events that do not match stayed in the window.
func TestWhereCountLeavesWhenMatchingEventsAgeOut(t *testing.T) {
	t.Parallel()
	e := newEnv(t, defs{"buckets/pro.yaml": proBuyers})
	e.contact("buyer", `{}`)
	e.purchases("buyer", `{"plan":"pro"}`, 29*day, 28*day)
	e.purchases("buyer", `{"plan":"basic"}`, day, day, day)
	e.contact("steady", `{}`)
	e.purchases("steady", `{"plan":"pro"}`, day, 2*day)
	e.member("pro-buyers", "buyer", 28*day)
	e.member("pro-buyers", "steady", 2*day)

	out := e.sweep(ReconcileInput{})
	require.Zero(t, out.bucket("pro-buyers").Left, "both still match")
	e.clock.Advance(1*day + time.Hour) // one of buyer's pro purchases ages out
	out = e.sweep(ReconcileInput{})
	require.Equal(t, 1, out.bucket("pro-buyers").Left)
	require.Zero(t, out.bucket("pro-buyers").Evaluated, "a filtered single leg leaves set-based")
	require.Equal(t, db.StatusLeft, e.status("pro-buyers", "buyer"))
	require.Equal(t, db.StatusActive, e.status("pro-buyers", "steady"))
}

// A sum bucket leaves when enough of the amount ages out.
func TestSumLeavesWhenTheAmountAgesOut(t *testing.T) {
	t.Parallel()
	e := newEnv(t, defs{"buckets/big.yaml": bigSpenders})
	e.contact("spender", `{}`)
	e.purchases("spender", `{"amount":60}`, 20*day)
	e.purchases("spender", `{"amount":40.5}`, 10*day)
	e.purchases("spender", `{"amount":"1000"}`, day) // a string: not summed
	e.member("big-spenders", "spender", 10*day)

	require.Zero(t, e.sweep(ReconcileInput{}).Reconciled)
	e.clock.Advance(11 * day)
	require.Equal(t, 1, e.sweep(ReconcileInput{}).bucket("big-spenders").Left)
	require.Equal(t, db.StatusLeft, e.status("big-spenders", "spender"))
}

// The backfill materializes the matchers of each new criterion set-based,
// silently, and a re-evaluation makes those who no longer match leave.
func TestBackfillOfFiltersAggregatesAndDates(t *testing.T) {
	t.Parallel()
	e := newEnv(t, defs{"buckets/trial.yaml": trialEndingSoon, "buckets/pro.yaml": proBuyers, "buckets/big.yaml": bigSpenders})
	e.contact("soon", `{"plan":"trial","trial_ends_at":"2026-11-30"}`)
	e.contact("later", `{"plan":"trial","trial_ends_at":"2026-12-30"}`)
	e.contact("pro", `{}`)
	e.purchases("pro", `{"plan":"pro","amount":80}`, day, 2*day)
	e.contact("basic", `{}`)
	e.purchases("basic", `{"plan":"basic","amount":500}`, day, 2*day)
	e.purchases("no-contact", `{"plan":"pro","amount":500}`, day, 2*day)

	require.Equal(t, 1, e.backfill("trial-ending-soon", ModeFirstTime).Joined)
	require.Equal(t, db.StatusActive, e.status("trial-ending-soon", "soon"))
	require.Equal(t, time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC), e.memberships("trial-ending-soon", "soon")[0].ExpiresAt.UTC())
	require.Equal(t, 1, e.backfill("pro-buyers", ModeFirstTime).Joined)
	require.Equal(t, db.StatusActive, e.status("pro-buyers", "pro"))
	require.Equal(t, 2, e.backfill("big-spenders", ModeFirstTime).Joined)
	require.Equal(t, "none", e.status("big-spenders", "no-contact"), "only live contacts are materialized")
	require.Zero(t, e.count("SELECT count(*) FROM user_events WHERE source = 'bucket'"), "no bucket:entered")

	// The clock moves past "soon"'s date: a re-evaluation makes it leave, and emits.
	e.clock.Advance(2 * day)
	require.Equal(t, 1, e.backfill("trial-ending-soon", ModeReeval).Left)
	require.Equal(t, db.StatusLeft, e.status("trial-ending-soon", "soon"))
	require.Len(t, e.transitions("soon"), 1)
}

// explain says what each new kind of leg read: for a where, how many events
// passed it of those in the window; for an aggregate, its value and how many
// events fed it; for a relative date, the parsed time and the window now.
func TestExplainFiltersAggregatesAndDates(t *testing.T) {
	t.Parallel()
	e := newEnv(t, defs{"buckets/trial.yaml": trialEndingSoon, "buckets/pro.yaml": proBuyers, "buckets/big.yaml": bigSpenders})
	e.contact("u", `{"plan":"trial","trial_ends_at":"2026-12-01T09:30:00+02:00"}`)
	e.purchases("u", `{"plan":"pro","amount":60}`, day)
	e.purchases("u", `{"plan":"basic","amount":40.5}`, 2*day)
	e.purchases("u", `{"plan":"basic","amount":"7"}`, 3*day)
	e.purchases("u", `{"plan":"pro","amount":1}`, 40*day) // out of the window

	pro := leaf(e.explain("u", "pro-buyers"), "criteria")
	require.False(t, pro.Result)
	require.Equal(t, int64(1), pro.Observed["count"], "one event passed where")
	require.Equal(t, int64(3), pro.Observed["inWindow"], "of three in the window")

	ex := e.explain("u", "big-spenders")
	require.True(t, ex.Verdict)
	sum := leaf(ex, "criteria")
	require.Equal(t, 100.5, sum.Observed["aggregate"])
	require.Equal(t, int64(2), sum.Observed["fed"], "the string amount is no number")
	require.Equal(t, int64(3), sum.Observed["count"])

	e.backfilled("trial-ending-soon")
	ex = e.explain("u", "trial-ending-soon")
	require.True(t, ex.Verdict)
	date := leaf(ex, "criteria.conditions[1]")
	require.Equal(t, time.Date(2026, 12, 1, 7, 30, 0, 0, time.UTC), date.Observed["time"])
	require.Equal(t, t0, date.Observed["from"])
	require.Equal(t, t0.Add(3*day), date.Observed["to"])
	require.Equal(t, "join", ex.Next, "the sweep would join this contact")
}
