package tasks

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bucketworker/bucket-worker/db"
	"github.com/bucketworker/bucket-worker/db/dbtest"
)

// Dwell reactions (contract §14): the sweep fires a bucket's dwell
// schedules for the members whose dwell clock says so, each fire once.

const (
	proBucket = "id: pro\nname: Pro\ncriteria: {type: property, property: plan, operator: eq, value: pro}\n"
	// proWeek is what Hogsend exports for bucket.on("dwell", {after: days(7)}).
	proWeek = `{"id": "bucket-pro-on-dwell-after-604800000", "name": "Pro for a week",
		"trigger": {"event": "bucket:dwell:pro:after-604800000"},
		"sourceBucketId": "pro", "reactionKind": "dwell",
		"dwellSchedule": {"label": "after-604800000", "after": 604800000}}`
	// proDaily fires every day of a membership, written by hand.
	proDaily = "id: pro-daily\ntrigger: {event: \"bucket:dwell:pro:every-86400000\"}\n" +
		"sourceBucketId: pro\nreactionKind: dwell\ndwellSchedule: {every: 1d}\n"

	weekLabel  = "after-604800000"
	dailyLabel = "every-86400000"
)

var dwellDefs = defs{"buckets/pro.yaml": proBucket, "journeys/pro-week.json": proWeek, "journeys/pro-daily.yaml": proDaily}

// dwellKeys returns the idempotency keys of the user's dwell fires, in order.
func (e *env) dwellKeys(userID string) []string {
	var out []string
	for _, k := range e.keys(userID) {
		if strings.Contains(k, ":dwell:") {
			out = append(out, k)
		}
	}
	return out
}

// proMember makes the user a live pro contact and an active member of pro
// who entered ago.
func (e *env) proMember(userID string, ago time.Duration) db.Membership {
	e.t.Helper()
	e.contact(userID, `{"plan":"pro"}`)
	return e.member("pro", userID, ago)
}

func TestDwellAfterFiresOncePerMembership(t *testing.T) {
	t.Parallel()
	e := newEnv(t, defs{"buckets/pro.yaml": proBucket, "journeys/pro-week.json": proWeek})
	e.backfilled("pro")
	e.proMember("due", 8*day)
	e.proMember("soon", 6*day)
	gone := e.proMember("gone", 3*day)
	gone.Status, gone.LeftAt = db.StatusLeft, ptr(e.clock.Now())
	e.update(gone)

	out := e.sweep(ReconcileInput{})
	require.Equal(t, 1, out.DwellFired)
	require.Equal(t, 1, out.bucket("pro").DwellFired)
	events := e.transitions("due")
	require.Len(t, events, 1)
	require.Equal(t, "bucket:dwell:pro:"+weekLabel, events[0].Event)
	require.Equal(t, "bucket:pro:due:dwell:"+weekLabel+":1", *events[0].IdempotencyKey, "Hogsend's key for a first membership")
	require.JSONEq(t, `{"bucketId":"pro","bucketName":"Pro","userId":"due","transition":"dwell",
		"source":"reconcile","entryCount":1,"dwellCount":1}`, string(events[0].Properties))
	require.True(t, events[0].OccurredAt.Equal(t0))
	row := e.memberships("pro", "due")[0]
	require.JSONEq(t, `{"`+weekLabel+`":"2026-11-29T12:00:00.000Z"}`, string(row.DwellState), "stamped in the fire's transaction")
	require.True(t, row.LastEvaluatedAt.Equal(t0))

	pushes := e.hatchet.pushes
	require.Len(t, pushes, 1, "the sweep dispatched the fire")
	require.Equal(t, "bucket:dwell:pro:"+weekLabel, pushes[0].EventKey)
	require.JSONEq(t, `{"bucketId":"pro","userId":"due","transition":"dwell","idempotencyKey":"bucket:pro:due:dwell:`+weekLabel+`:1"}`,
		string(pushes[0].AdditionalMetadata))

	require.Zero(t, e.sweep(ReconcileInput{}).DwellFired, "after fires once per membership")

	e.clock.Advance(day)
	require.Equal(t, 1, e.sweep(ReconcileInput{}).DwellFired)
	require.Equal(t, []string{"bucket:pro:soon:dwell:" + weekLabel + ":1"}, e.dwellKeys("soon"))

	e.clock.Advance(10 * day)
	require.Zero(t, e.sweep(ReconcileInput{}).DwellFired)
	require.Empty(t, e.dwellKeys("gone"), "a member who left before the offset never fires")

	// A re-join starts a new clock, and its fires carry the epoch.
	e.ingest("contact:updated", `{"userId":"due","contactProperties":{"plan":"free"}}`)
	e.ingest("contact:updated", `{"userId":"due","contactProperties":{"plan":"pro"}}`)
	require.Equal(t, 2, e.memberships("pro", "due")[1].EntryCount)
	e.clock.Advance(6 * day)
	require.Zero(t, e.sweep(ReconcileInput{}).DwellFired)
	e.clock.Advance(day)
	require.Equal(t, 1, e.sweep(ReconcileInput{}).DwellFired)
	require.Equal(t, []string{"bucket:pro:due:dwell:" + weekLabel + ":1", "bucket:pro:due:dwell:" + weekLabel + ":1:2"}, e.dwellKeys("due"))
	second := e.transitions("due")
	require.JSONEq(t, `{"bucketId":"pro","bucketName":"Pro","userId":"due","transition":"dwell",
		"source":"reconcile","entryCount":2,"dwellCount":1}`, string(second[len(second)-1].Properties))
}

func TestDwellEveryCountsFromTheClock(t *testing.T) {
	t.Parallel()
	e := newEnv(t, dwellDefs)
	e.backfilled("pro")
	e.proMember("u", 0)
	daily := func(n int) string { return fmt.Sprintf("bucket:pro:u:dwell:%s:%d", dailyLabel, n) }

	require.Zero(t, e.sweep(ReconcileInput{}).DwellFired)
	for n := 1; n <= 2; n++ {
		e.clock.Advance(day)
		require.Equal(t, 1, e.sweep(ReconcileInput{}).DwellFired, "day %d", n)
		require.Zero(t, e.sweep(ReconcileInput{}).DwellFired, "once per period")
	}
	e.clock.Advance(12 * time.Hour)
	require.Zero(t, e.sweep(ReconcileInput{}).DwellFired, "half a period after the last fire")
	e.clock.Advance(12 * time.Hour)
	require.Equal(t, 1, e.sweep(ReconcileInput{}).DwellFired)
	require.Equal(t, []string{daily(1), daily(2), daily(3)}, e.dwellKeys("u"))

	// Five days without a sweep: one catch-up fire, numbered by the clock;
	// the weekly reaction fires on its own.
	e.clock.Advance(5 * day)
	out := e.sweep(ReconcileInput{})
	require.Equal(t, 2, out.DwellFired)
	require.Equal(t, []string{daily(1), daily(2), daily(3), "bucket:pro:u:dwell:" + weekLabel + ":1", daily(8)}, e.dwellKeys("u"))
	last := e.transitions("u")
	var props map[string]any
	require.NoError(t, json.Unmarshal(last[len(last)-1].Properties, &props))
	require.Equal(t, 8.0, props["dwellCount"])
	require.Zero(t, e.sweep(ReconcileInput{}).DwellFired)
	require.JSONEq(t, `{"`+dailyLabel+`":"2026-12-07T12:00:00.000Z","`+weekLabel+`":"2026-12-07T12:00:00.000Z"}`,
		string(e.memberships("pro", "u")[0].DwellState))
}

func TestDwellWaitsForTheBackfillAndTheSwitch(t *testing.T) {
	t.Parallel()
	e := newEnv(t, dwellDefs)
	e.proMember("u", 8*day)

	out := e.sweep(ReconcileInput{})
	require.Equal(t, "backfill_missing", out.bucket("pro").DwellSkipped, "the first-deploy guard")
	require.Zero(t, out.DwellFired)

	e.backfilled("pro")
	require.NoError(t, db.SetBucketEnabled(e.ctx, e.db, "pro", false, e.clock.Now()))
	out = e.sweep(ReconcileInput{})
	require.Equal(t, "bucket_disabled", out.bucket("pro").Skipped)
	require.Zero(t, out.DwellFired)

	dry := e.sweep(ReconcileInput{DryRun: true})
	require.Zero(t, dry.DwellFired)
	require.NoError(t, db.SetBucketEnabled(e.ctx, e.db, "pro", true, e.clock.Now()))
	dry = e.sweep(ReconcileInput{DryRun: true})
	require.Equal(t, 2, *dry.bucket("pro").WouldFire, "a dry run counts the fires due")
	require.Empty(t, e.dwellKeys("u"), "and makes none")
	require.Equal(t, 2, e.sweep(ReconcileInput{}).DwellFired)
}

func TestDwellExitsJourneys(t *testing.T) {
	t.Parallel()
	files := defs{"buckets/pro.yaml": proBucket, "journeys/pro-week.json": proWeek,
		"journeys/trial.yaml": "id: trial-nudges\ntrigger: {event: signup}\nexitOn: [{event: \"bucket:dwell:pro:" + weekLabel + "\"}]\n"}
	e := newEnv(t, files)
	e.backfilled("pro")
	e.proMember("u", 8*day)
	require.NoError(t, dbtest.InsertJourneyStates(e.ctx, e.db, []db.JourneyState{
		{UserID: "u", UserEmail: "u@example.com", JourneyID: "trial-nudges", CurrentNodeID: "wait", HatchetRunID: ptr("run-1")},
	}))

	e.sweep(ReconcileInput{})
	require.Equal(t, []string{"run-1"}, e.hatchet.cancelled, "the dwell event exits the journey it ends")
}

// TestDwellFireAndStampCommitTogether kills a sweep's transaction at its
// commit, after the fire's stamp and events were written: nothing of it
// stays, and the next sweep — a worker restarted on the same database —
// fires once.
func TestDwellFireAndStampCommitTogether(t *testing.T) {
	t.Parallel()
	e := newEnv(t, dwellDefs)
	e.backfilled("pro")
	e.proMember("u", 8*day)
	e.exec(`CREATE FUNCTION refuse_dwell() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN RAISE EXCEPTION 'killed at commit'; END $$`)
	e.exec(`CREATE CONSTRAINT TRIGGER refuse_dwell AFTER INSERT ON user_events DEFERRABLE INITIALLY DEFERRED
		FOR EACH ROW WHEN (NEW.event LIKE 'bucket:dwell:%') EXECUTE FUNCTION refuse_dwell()`)

	out, err := Reconcile(e.ctx, e.deps, ReconcileInput{})
	require.NoError(t, err)
	require.Contains(t, out.bucket("pro").Error, "killed at commit")
	require.Zero(t, out.DwellFired)
	require.Empty(t, e.dwellKeys("u"))
	require.Equal(t, "{}", string(e.memberships("pro", "u")[0].DwellState), "the stamp went with the fire")
	require.Zero(t, e.count("SELECT count(*) FROM bucket_event_outbox"))

	e.exec("DROP TRIGGER refuse_dwell ON user_events")
	restarted := newEnvOn(t, e.db, e.clock, dwellDefs)
	require.Equal(t, 2, restarted.sweep(ReconcileInput{}).DwellFired)
	require.Zero(t, restarted.sweep(ReconcileInput{}).DwellFired)
	require.Equal(t, map[string]int{"bucket:pro:u:dwell:" + weekLabel + ":1": 1, "bucket:pro:u:dwell:" + dailyLabel + ":8": 1},
		restarted.hatchet.pushedKeys())
}

// TestRaceDwellSweeps runs two replicas' sweeps at once over the same due
// members: each member fires each schedule once, and the two outputs add
// up to the fires made.
func TestRaceDwellSweeps(t *testing.T) {
	t.Parallel()
	e := newEnv(t, dwellDefs)
	e.backfilled("pro")
	other := newEnvOn(t, e.db, e.clock, dwellDefs)
	const members = 400
	for round := range 5 {
		users := roundUsers(round, "due", members)
		for _, u := range users {
			e.proMember(u, 8*day)
		}
		var wg sync.WaitGroup
		outs := make([]ReconcileOutput, 2)
		for i, env := range []*env{e, other} {
			wg.Go(func() {
				jitter(5 * time.Millisecond)
				outs[i] = env.sweep(ReconcileInput{})
			})
		}
		wg.Wait()
		require.Equal(t, 2*members, outs[0].DwellFired+outs[1].DwellFired, "round %d: one fire per member and schedule", round)
		for _, u := range users {
			require.Len(t, e.dwellKeys(u), 2, "round %d: user %s", round, u)
		}
		require.Equal(t, members*(round+1), e.count("SELECT count(*) FROM bucket_memberships WHERE dwell_state -> ? IS NOT NULL", dailyLabel))
	}
	pushed := e.hatchet.pushedKeys()
	for k, n := range other.hatchet.pushedKeys() {
		pushed[k] += n
	}
	for k, n := range pushed {
		require.Equal(t, 1, n, "key %s pushed once", k)
	}
}

// TestRaceDwellAndLeave races a sweep's dwell fires with leaves of the
// same members (a batch moving them off the pro plan): a fire is stamped
// on a row only while it is active, so a left row carries a stamp only if
// the leave came after it. The two paths run on clocks a second apart,
// which tells their writes apart in updated_at.
func TestRaceDwellAndLeave(t *testing.T) {
	t.Parallel()
	e := newEnv(t, defs{"buckets/pro.yaml": proBucket, "journeys/pro-week.json": proWeek})
	e.backfilled("pro")
	leaving := newEnvOn(t, e.db, &clock{now: t0.Add(time.Second)}, defs{"buckets/pro.yaml": proBucket, "journeys/pro-week.json": proWeek})
	const members = 200
	for round := range raceRounds / 2 {
		// The fillers fire too, which keeps the sweep's statements long
		// enough for a leave to commit between its choice and its stamp.
		users := roundUsers(round, "leaving", members)
		all := append(roundUsers(round, "filler", raceFillers*10), users...)
		require.NoError(t, dbtest.InsertContacts(e.ctx, e.db, dbtest.Contacts(all, `{"plan":"pro"}`)))
		require.NoError(t, dbtest.InsertMemberships(e.ctx, e.db, dbtest.Members(all, "pro", t0.Add(-8*day))))
		elements := make([]string, len(users))
		for i, u := range users {
			elements[i] = element("contact:updated", u, `"contactProperties":{"plan":"free"}`)
		}
		var wg sync.WaitGroup
		wg.Go(func() {
			jitter(10 * time.Millisecond)
			e.sweep(ReconcileInput{})
		})
		wg.Go(func() {
			jitter(10 * time.Millisecond)
			_, err := HandleBatch(leaving.ctx, leaving.deps, IngestStore, []byte(`{"events":[`+strings.Join(elements, ",")+`]}`), "")
			require.NoError(t, err)
		})
		wg.Wait()
		for _, u := range users {
			rows := e.memberships("pro", u)
			require.Len(t, rows, 1)
			m := rows[0]
			require.Equal(t, db.StatusLeft, m.Status, "round %d: %s left", round, u)
			fired := len(e.dwellKeys(u))
			stamped := string(m.DwellState) != "{}"
			require.Equal(t, stamped, fired == 1, "round %d: %s: a fire and its stamp go together", round, u)
			if stamped {
				require.True(t, m.UpdatedAt.Equal(t0.Add(time.Second)), "round %d: %s was stamped after it left", round, u)
			}
		}
	}
}

// TestBackfillDatesAQuietMembership: a backfilled member of "did not do X
// in W" has been one since W after their last X, and their dwell clock
// says so; Hogsend's clock (the last X itself) would fire both at once.
func TestBackfillDatesAQuietMembership(t *testing.T) {
	t.Parallel()
	files := defs{
		"buckets/quiet.yaml":  "id: quiet\nname: Quiet\ncriteria: {type: event, eventName: app.active, check: not_exists, within: 7d}\n",
		"buckets/pro.yaml":    proBucket,
		"journeys/quiet.yaml": "id: quiet-a-day\ntrigger: {event: \"bucket:dwell:quiet:after-86400000\"}\nsourceBucketId: quiet\nreactionKind: dwell\ndwellSchedule: {after: 86400000}\n",
		"journeys/pro.json":   proWeek,
	}
	e := newEnv(t, files)
	e.contact("long", `{"plan":"pro"}`)
	e.events("long", "app.active", 10*day, 20*day)
	e.contact("lately", `{}`)
	e.events("lately", "app.active", 7*day+12*time.Hour)
	e.backfill("quiet", ModeFirstTime)
	e.backfill("pro", ModeFirstTime)

	anchor := func(bucketID, userID string) *time.Time { return e.memberships(bucketID, userID)[0].DwellAnchorAt }
	require.True(t, anchor("quiet", "long").Equal(t0.Add(-3*day)), "quiet since the last event plus the window: %v", anchor("quiet", "long"))
	require.True(t, anchor("quiet", "lately").Equal(t0.Add(-12*time.Hour)))
	require.Nil(t, anchor("pro", "long"), "a property bucket's criteria do not say when it began")

	out := e.sweep(ReconcileInput{})
	require.Equal(t, 1, out.bucket("quiet").DwellFired)
	require.Equal(t, []string{"bucket:quiet:long:dwell:after-86400000:1"}, e.dwellKeys("long"))
	require.Zero(t, out.bucket("pro").DwellFired, "the backfill's pro member entered now")
	e.clock.Advance(12 * time.Hour)
	require.Equal(t, 1, e.sweep(ReconcileInput{}).bucket("quiet").DwellFired)
	require.Equal(t, []string{"bucket:quiet:lately:dwell:after-86400000:1"}, e.dwellKeys("lately"))
}

// TestHogsendDatabaseOfToday runs the engine on a database made by
// Hogsend's latest migrations (contract §14.1): every row it inserts into
// bucket_memberships and user_events carries the user's live contact, so
// that Hogsend's readers, which go by contact, see it; and a membership
// Hogsend wrote for the contact wins the join race cleanly.
func TestHogsendDatabaseOfToday(t *testing.T) {
	t.Parallel()
	conn, _ := dbtest.HogsendLatest(t)
	e := newEnvOn(t, conn, &clock{now: t0}, dwellDefs)
	require.Equal(t, db.Schema{MembershipContactID: true, EventContactID: true, UniqueContactEmail: true}, e.deps.Schema)
	e.backfilled("pro")
	contactOf := func(userID string) string {
		c, err := db.ContactByUser(e.ctx, e.db, userID)
		require.NoError(t, err)
		return c.ID
	}
	// byContact counts the rows of a table that carry the user's contact.
	byContact := func(table, userID string) int {
		return e.count("SELECT count(*) FROM "+table+" WHERE contact_id = ? AND user_id = ?", contactOf(userID), userID)
	}

	out := e.ingest("app.active", `{"userId":"u","userEmail":"u@example.com","contactProperties":{"plan":"pro"}}`)
	require.Len(t, out.Transitions, 1)
	require.Equal(t, 1, byContact("bucket_memberships", "u"), "Hogsend's bucket.has() finds the member")
	require.Equal(t, 2, byContact("user_events", "u"), "the event ingested and bucket:entered")

	e.clock.Advance(8 * day)
	require.Equal(t, 2, e.sweep(ReconcileInput{}).DwellFired)
	require.Equal(t, 4, byContact("user_events", "u"), "the dwell fires")

	e.ingest("contact:updated", `{"userId":"u","contactProperties":{"plan":"free"}}`)
	require.Equal(t, db.StatusLeft, e.status("pro", "u"))
	require.Equal(t, 6, byContact("user_events", "u"), "contact:updated and bucket:left")
	require.Zero(t, e.count("SELECT count(*) FROM user_events WHERE contact_id IS NULL"))

	// Hogsend keyed its own member by email; the contact is the same.
	e.contact("v", `{"plan":"pro"}`)
	e.exec("INSERT INTO bucket_memberships (user_id, contact_id, bucket_id, source) VALUES ('v@example.com', ?, 'pro', 'event')", contactOf("v"))
	out = e.ingest("app.active", `{"userId":"v"}`)
	require.Empty(t, out.Transitions, "another writer holds the contact's membership")
	require.Equal(t, "none", e.status("pro", "v"))
	require.Empty(t, e.transitions("v"))
	require.Equal(t, 1, e.count("SELECT count(*) FROM bucket_memberships WHERE bucket_id = 'pro' AND status = 'active'"))

	// Hogsend's emails are unique among live contacts. A form left a
	// contact with w's email and no user key: w's events are stored, w's
	// contact without the email, and the join records the event's.
	e.exec("INSERT INTO contacts (email, properties) VALUES ('w@example.com', '{}')")
	out = e.ingest("app.active", `{"userId":"w","userEmail":"W@Example.com","contactProperties":{"plan":"pro"}}`)
	require.True(t, out.Stored)
	require.Len(t, out.Transitions, 1)
	w, err := db.ContactByUser(e.ctx, e.db, "w")
	require.NoError(t, err)
	require.Nil(t, w.Email, "the email belongs to another contact")
	require.Equal(t, "w@example.com", *e.memberships("pro", "w")[0].UserEmail)
	e.ingest("app.active", `{"userId":"u","userEmail":"u@example.com"}`)
	u, err := db.ContactByUser(e.ctx, e.db, "u")
	require.NoError(t, err)
	require.Equal(t, "u@example.com", *u.Email, "a contact's own email is written as before")
}

func TestExplainShowsWhereDwellStands(t *testing.T) {
	t.Parallel()
	e := newEnv(t, dwellDefs)
	e.backfilled("pro")
	e.proMember("u", 3*day)
	e.sweep(ReconcileInput{})

	m := e.explain("u", "pro").Membership
	require.NotNil(t, m)
	require.True(t, m.DwellClock.Equal(t0.Add(-3*day)))
	require.Len(t, m.Dwell, 2)
	daily, week := m.Dwell[0], m.Dwell[1] // in file order
	require.Equal(t, weekLabel, week.Label)
	require.Equal(t, "after 7d", week.Schedule)
	require.Equal(t, []string{"bucket-pro-on-dwell-after-604800000"}, week.Journeys)
	require.Nil(t, week.LastFiredAt)
	require.True(t, week.NextAt.Equal(t0.Add(4*day)), "seven days after the clock")
	require.Equal(t, "every 1d", daily.Schedule)
	require.True(t, daily.LastFiredAt.Equal(t0), "the sweep fired it")
	require.True(t, daily.NextAt.Equal(t0.Add(day)))

	e.clock.Advance(4 * day)
	e.sweep(ReconcileInput{})
	week = e.explain("u", "pro").Membership.Dwell[1]
	require.True(t, week.LastFiredAt.Equal(t0.Add(4*day)))
	require.Nil(t, week.NextAt, "after fires once per membership")
}
