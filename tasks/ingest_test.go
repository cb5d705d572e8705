package tasks

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bucketworker/bucket-worker/db"
	"github.com/bucketworker/bucket-worker/db/dbtest"
)

// ingest runs bucket-ingest's store path with a JSON payload.
func (e *env) ingest(event, payload string) IngestOutput {
	e.t.Helper()
	out, err := HandleIngest(e.ctx, e.deps, IngestStore, event, []byte(payload), "")
	require.NoError(e.t, err)
	return out
}

func (e *env) contactProps(userID string) map[string]any {
	e.t.Helper()
	c, err := db.ContactByUser(e.ctx, e.db, userID)
	require.NoError(e.t, err)
	require.NotNil(e.t, c)
	return c.PropertyMap()
}

func TestIngestJoinsOnceAndLeavesOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t, defs{"buckets/engaged-pro.yaml": proAndActive})
	payload := `{"userId":"u","userEmail":"  U@Example.COM ","contactProperties":{"plan":"pro"}}`

	out := e.ingest("app.active", payload)
	require.True(t, out.Stored)
	require.Equal(t, []Transition{{BucketID: "engaged-pro", UserID: "u", Transition: Entered, Epoch: 1, Source: SourceEvent,
		RowID: e.memberships("engaged-pro", "u")[0].ID}}, out.Transitions)
	rows := e.memberships("engaged-pro", "u")
	require.Len(t, rows, 1)
	require.Equal(t, db.StatusActive, rows[0].Status)
	require.Equal(t, "u@example.com", *rows[0].UserEmail)
	require.Equal(t, string(SourceEvent), *rows[0].Source)
	events := e.transitions("u")
	require.Len(t, events, 1)
	require.Equal(t, "bucket:entered:engaged-pro", events[0].Event)
	require.Equal(t, "bucket:engaged-pro:u:entered:1", *events[0].IdempotencyKey)
	require.JSONEq(t, `{"bucketId":"engaged-pro","bucketName":"Engaged pro","userId":"u","transition":"entered",
		"source":"event","entryCount":1}`, string(events[0].Properties))

	out = e.ingest("app.active", payload)
	require.True(t, out.Stored)
	require.Empty(t, out.Transitions, "already a member: nothing changes")
	require.Len(t, e.memberships("engaged-pro", "u"), 1)
	require.Len(t, e.transitions("u"), 1)

	out = e.ingest(ContactUpdated, `{"userId":"u","contactProperties":{"plan":"free"}}`)
	require.Equal(t, []TransitionKind{Left}, transitionKinds(out))
	require.Equal(t, db.StatusLeft, e.status("engaged-pro", "u"))
	events = e.transitions("u")
	require.Len(t, events, 2)
	require.Equal(t, "bucket:engaged-pro:u:left:1", *events[1].IdempotencyKey)
	require.Len(t, e.hatchet.pushedKeys(), 2, "each transition pushed at the end of its run")
}

func transitionKinds(out IngestOutput) []TransitionKind {
	var kinds []TransitionKind
	for _, t := range out.Transitions {
		kinds = append(kinds, t.Transition)
	}
	return kinds
}

func TestContactStateIsAuthoritative(t *testing.T) {
	t.Parallel()
	e := newEnv(t, defs{"buckets/engaged-pro.yaml": proAndActive})
	e.contact("free", `{"plan":"free"}`)
	out := e.ingest("app.active", `{"userId":"free","properties":{"plan":"pro","source":"x"}}`)
	require.Empty(t, out.Transitions, "the event's own properties do not make a free user pro")
	require.Equal(t, map[string]any{"plan": "free"}, e.contactProps("free"), "event properties never reach the contact")

	e.contact("pro", `{"plan":"pro"}`)
	require.Len(t, e.ingest("app.active", `{"userId":"pro"}`).Transitions, 1)
	out = e.ingest("app.active", `{"userId":"pro","properties":{"plan":"free"}}`)
	require.Empty(t, out.Transitions, "nor does an event's property make a pro user leave")
	require.Equal(t, db.StatusActive, e.status("engaged-pro", "pro"))

	out = e.ingest("app.active", `{"userId":"free","contactProperties":{"plan":"pro","seats":3}}`)
	require.Len(t, out.Transitions, 1, "contactProperties patch the contact, and it joins")
	require.Equal(t, map[string]any{"plan": "pro", "seats": float64(3)}, e.contactProps("free"))
}

func TestEntryLimitsOnTheRealTimePath(t *testing.T) {
	t.Parallel()
	bucket := func(id, extra string) string {
		return "id: " + id + "\nname: " + id + "\ncriteria: {type: property, property: plan, operator: eq, value: pro}\n" + extra
	}
	e := newEnv(t, defs{
		"buckets/once.yaml":      bucket("once", "entryLimit: once\n"),
		"buckets/period.yaml":    bucket("period", "entryLimit: once_per_period\nentryPeriod: 7d\n"),
		"buckets/no-period.yaml": bucket("no-period", "entryLimit: once_per_period\n"),
	})
	flip := func(plan string) IngestOutput {
		return e.ingest(ContactUpdated, `{"userId":"u","contactProperties":{"plan":"`+plan+`"}}`)
	}
	entered := func(bucketID string) int {
		return e.count("SELECT count(*) FROM user_events WHERE event = ?", "bucket:entered:"+bucketID)
	}
	require.Len(t, flip("pro").Transitions, 3)
	require.Len(t, flip("free").Transitions, 3)
	e.clock.Advance(day)
	out := flip("pro") // rejoin one day after leaving
	require.Len(t, out.Transitions, 3)
	suppressed := map[string]bool{}
	for _, tr := range out.Transitions {
		require.Equal(t, 2, tr.Epoch)
		suppressed[tr.BucketID] = tr.Suppressed
	}
	require.Equal(t, map[string]bool{"once": true, "period": true, "no-period": false}, suppressed)
	require.Equal(t, 1, entered("once"))
	require.Equal(t, 1, entered("period"))
	require.Equal(t, 2, entered("no-period"))
	require.Len(t, e.memberships("once", "u"), 2, "the row is written even when the event is not")

	flip("free")
	e.clock.Advance(8 * day) // past the period
	flip("pro")
	require.Equal(t, 1, entered("once"))
	require.Equal(t, 2, entered("period"))
	require.Equal(t, "bucket:period:u:entered:3", *e.transitions("u")[len(e.transitions("u"))-1].IdempotencyKey)
}

func TestIngestIgnoresReservedEventsAndErasedUsers(t *testing.T) {
	t.Parallel()
	e := newEnv(t, defs{"buckets/recent.yaml": recentlyActive})
	out := e.ingest("bucket:entered:recent", `{"userId":"u"}`)
	require.Equal(t, "ignored", out.Status)
	require.Equal(t, "reserved_prefix", out.Reason)
	require.False(t, out.Stored)

	e.contact("gone", `{}`)
	e.setDeleted("gone", &t0)
	out = e.ingest("app.active", `{"userId":"gone","contactProperties":{"plan":"pro"}}`)
	require.Equal(t, IngestOutput{Stored: false, Status: "ignored", Reason: "contact_deleted", Transitions: []Transition{}, Exited: []string{}}, out)
	require.Equal(t, 0, e.count("SELECT count(*) FROM user_events"))
	require.Equal(t, 0, e.count("SELECT count(*) FROM bucket_memberships"))
	require.Equal(t, 1, e.count("SELECT count(*) FROM contacts"), "no live contact is created for an erased user")
}

func TestCountCriteriaSeeTheIngestedEvent(t *testing.T) {
	t.Parallel()
	e := newEnv(t, defs{"buckets/power.yaml": powerUsers})
	for i := 1; i <= 9; i++ {
		require.Empty(t, e.ingest("key.action", `{"userId":"u"}`).Transitions, "event %d", i)
	}
	out := e.ingest("key.action", `{"userId":"u"}`)
	require.Equal(t, []TransitionKind{Entered}, transitionKinds(out), "the 10th event joins on that very event")
}

func TestIdempotentIngest(t *testing.T) {
	t.Parallel()
	e := newEnv(t, defs{"buckets/power.yaml": powerUsers})
	for range 9 {
		e.ingest("key.action", `{"userId":"u"}`)
	}
	out := e.ingest("key.action", `{"userId":"u","idempotencyKey":"k1","contactProperties":{"x":1}}`)
	require.True(t, out.Stored)
	require.Len(t, out.Transitions, 1)
	out = e.ingest("key.action", `{"userId":"u","idempotencyKey":"k1","contactProperties":{"x":2}}`)
	require.Equal(t, IngestOutput{Stored: false, Transitions: []Transition{}, Exited: []string{}}, out)
	require.Equal(t, 10, e.count("SELECT count(*) FROM user_events WHERE event = 'key.action'"))
	require.Equal(t, float64(1), e.contactProps("u")["x"], "the duplicate's contact patch is rolled back too")

	// A Hatchet retry of the same run stores its key-less event once.
	for range 2 {
		_, err := HandleIngest(e.ctx, e.deps, IngestStore, "key.action", []byte(`{"userId":"v"}`), "run-1")
		require.NoError(t, err)
	}
	require.Equal(t, 1, e.count("SELECT count(*) FROM user_events WHERE user_id = 'v'"))
	require.Equal(t, 1, e.count("SELECT count(*) FROM user_events WHERE idempotency_key = 'hatchet-run:run-1'"))
}

func TestConcurrentIngestsJoinOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t, defs{"buckets/recent.yaml": recentlyActive})
	for round := range 20 {
		user := fmt.Sprintf("u%d", round)
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				_, err := HandleIngest(e.ctx, e.deps, IngestStore, "app.active", []byte(`{"userId":"`+user+`"}`), "")
				require.NoError(t, err)
			})
		}
		wg.Wait()
		require.Len(t, e.memberships("recent", user), 1, user)
		require.Len(t, e.transitions(user), 1, user)
	}
}

func TestRealTimeLeaveDefersInsideMinDwell(t *testing.T) {
	t.Parallel()
	e := newEnv(t, defs{"buckets/vip.yaml": "id: vip\nname: VIP\nminDwell: 1d\n" +
		"criteria: {type: property, property: tier, operator: eq, value: gold}\n"})
	e.ingest(ContactUpdated, `{"userId":"u","contactProperties":{"tier":"gold"}}`)
	e.clock.Advance(time.Hour)
	out := e.ingest(ContactUpdated, `{"userId":"u","contactProperties":{"tier":"silver"}}`)
	require.Empty(t, out.Transitions, "inside minDwell the leave waits")
	row := e.memberships("vip", "u")[0]
	require.Equal(t, db.StatusActive, row.Status)
	require.Equal(t, row.EnteredAt.Add(day), row.ExpiresAt.UTC())

	require.Equal(t, 0, e.sweep(ReconcileInput{}).Reconciled, "not due yet")
	e.clock.Advance(23 * time.Hour)
	require.Equal(t, 1, e.sweep(ReconcileInput{}).bucket("vip").DeferredLeft, "the sweep completes the leave")
	require.Equal(t, db.StatusLeft, e.status("vip", "u"))
}

func TestInvalidPayloadsWriteNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t, defs{"buckets/recent.yaml": recentlyActive})
	for _, tc := range []struct{ payload, field string }{
		{`{}`, "userId"},
		{`{"userId":""}`, "userId"},
		{`{"userId":42}`, "userId"},
		{`{"userId":"u","properties":[1]}`, "properties"},
		{`{"userId":"u","properties":"x"}`, "properties"},
		{`{"userId":"u","contactProperties":3}`, "contactProperties"},
		{`{"userId":"u","occurredAt":"yesterday"}`, "occurredAt"},
		{`{"userId":"u","idempotencyKey":""}`, "idempotencyKey"},
		{`[1,2]`, "payload"},
		{`"u"`, "payload"},
		// The input rules of contract §7: what decoding or Postgres would
		// silently change or refuse is refused here, naming the field.
		{"{\"userId\":\"c\xff\"}", "userId is not valid UTF-8"},
		{`{"userId":"c\u0000d"}`, "userId holds a NUL character"},
		{`{"userId":"c\ud800"}`, "userId holds half of a UTF-16 surrogate pair"},
		{`{"userId":"c\udc00x"}`, "userId holds half of a UTF-16 surrogate pair"},
		{`{"userId":"` + strings.Repeat("u", MaxKeyBytes+1) + `"}`, "userId has 513 bytes; at most 512"},
		{"{\"userId\":\"u\",\"userEmail\":\"a\xfe@x\"}", "userEmail is not valid UTF-8"},
		{`{"userId":"u","userEmail":"a\u0000@x"}`, "userEmail holds a NUL"},
		{`{"userId":"u","idempotencyKey":"k\u0000"}`, "idempotencyKey holds a NUL"},
		{`{"userId":"u","idempotencyKey":"` + strings.Repeat("k", MaxKeyBytes+1) + `"}`, "idempotencyKey has 513 bytes"},
		{`{"userId":"u","idempotencyKey":"bucket:recent:v:entered:1"}`, "idempotencyKey \"bucket:recent:v:entered:1\" is in a namespace of the worker's own"},
		{`{"userId":"u","idempotencyKey":"hatchet-run:6f1c2a4e"}`, "idempotencyKey \"hatchet-run:6f1c2a4e\" is in a namespace"},
		{`{"userId":"u","properties":{"plan":"a\u0000"}}`, "properties holds a NUL"},
		{`{"userId":"u","properties":{"a\u0000":1}}`, "properties holds a NUL"},
		{`{"userId":"u","contactProperties":{"p":["\ud83d"]}}`, "contactProperties holds half of a UTF-16 surrogate pair"},
		{"{\"userId\":\"u\",\"contactProperties\":{\"p\":\"\xc3\"}}", "contactProperties is not valid UTF-8"},
		{`{"userId":"u","occurredAt":"0000-06-01T00:00:00Z"}`, "occurredAt \"0000-06-01T00:00:00Z\" is before the year 1"},
	} {
		_, err := HandleIngest(e.ctx, e.deps, IngestStore, "app.active", []byte(tc.payload), "")
		require.ErrorIs(t, err, ErrInvalidInput, tc.payload)
		require.ErrorContains(t, err, tc.field, tc.payload)
	}
	for _, event := range []string{"app.active\xff", "app\x00active"} {
		_, err := HandleIngest(e.ctx, e.deps, IngestStore, event, []byte(`{"userId":"u"}`), "")
		require.ErrorIs(t, err, ErrInvalidInput, event)
		require.ErrorContains(t, err, "the event name", event)
	}
	require.Equal(t, 0, e.count("SELECT count(*) FROM user_events"))
	require.Equal(t, 0, e.count("SELECT count(*) FROM contacts"))
}

// TestInputThatDecodingWouldChange: valid payloads that a careless decode
// would alter are stored as sent — a genuine U+FFFD, an escaped surrogate
// pair, numbers beyond the double range or integer precision — and a
// time far ahead is clamped to the ingest time.
func TestInputThatDecodingWouldChange(t *testing.T) {
	t.Parallel()
	e := newEnv(t, defs{"buckets/recent.yaml": recentlyActive})
	out := e.ingest("app.active", `{"userId":"c\ufffd","properties":{"big":1e309,"id":9007199254740993,"smile":"\ud83d\ude00"},`+
		`"contactProperties":{"big":1e309}}`)
	require.True(t, out.Stored)
	require.False(t, out.ClampedOccurredAt)
	var same bool
	require.NoError(t, e.db.NewRaw("SELECT properties = ?::jsonb FROM user_events WHERE user_id = ?",
		`{"big":1e309,"id":9007199254740993,"smile":"😀"}`, "c\ufffd").Scan(e.ctx, &same))
	require.True(t, same, "the properties are stored exactly as sent")
	require.Equal(t, math.Inf(1), e.contactProps("c\ufffd")["big"], "read as Hogsend reads it")

	out = e.ingest("app.active", `{"userId":"skewed","occurredAt":"9999-12-31T00:00:00Z"}`)
	require.True(t, out.Stored)
	require.True(t, out.ClampedOccurredAt)
	var at time.Time
	require.NoError(t, e.db.NewRaw("SELECT occurred_at FROM user_events WHERE user_id = 'skewed'").Scan(e.ctx, &at))
	require.True(t, at.Equal(e.clock.Now()), "stored as happening now: %s", at)

	out = e.ingest("app.active", `{"userId":"a-little-ahead","occurredAt":"`+e.clock.Now().Add(MaxClockSkew).Format(time.RFC3339Nano)+`"}`)
	require.False(t, out.ClampedOccurredAt, "up to MaxClockSkew ahead is kept")
}

func TestIngestExitsJourneysOfTheEventAndItsTransitions(t *testing.T) {
	t.Parallel()
	e := newEnv(t, defs{
		"buckets/dormant.yaml":  wentDormant,
		"journeys/winback.yaml": winbackJourneys,
		"journeys/trial.yaml":   "id: trial\ntrigger: {event: signup}\nexitOn: [{event: purchase, where: [{property: plan, operator: eq, value: pro}]}]\n",
	})
	e.contact("u", `{}`)
	e.events("u", "app.active", 30*day)
	e.member("dormant", "u", 20*day)
	require.NoError(t, dbtest.InsertJourneyStates(e.ctx, e.db, []db.JourneyState{
		{UserID: "u", UserEmail: "u@x", JourneyID: "winback", CurrentNodeID: "n", Status: "active"},
		{UserID: "u", UserEmail: "u@x", JourneyID: "trial", CurrentNodeID: "n", Status: "active"},
	}))
	out := e.ingest("purchase", `{"userId":"u","properties":{"plan":"basic"}}`)
	require.Empty(t, out.Exited, "where does not match")
	out = e.ingest("purchase", `{"userId":"u","properties":{"plan":"pro"}}`)
	require.Equal(t, []string{"trial"}, out.Exited)
	out = e.ingest("app.active", `{"userId":"u"}`) // back: leaves dormant, which ends winback
	require.Equal(t, []TransitionKind{Left}, transitionKinds(out))
	require.Equal(t, []string{"winback"}, out.Exited)
	var props map[string]any
	require.NoError(t, json.Unmarshal(e.transitions("u")[0].Properties, &props))
	require.Equal(t, "event", props["source"])
}

func TestIngestHoldsOneConnectionAtATime(t *testing.T) {
	t.Parallel()
	e := newEnv(t, defs{"buckets/recent.yaml": recentlyActive, "buckets/engaged-pro.yaml": proAndActive})
	e.db.SetMaxOpenConns(2) // fewer connections than concurrent ingests
	ctx, cancel := context.WithTimeout(e.ctx, 30*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			_, err := HandleIngest(ctx, e.deps, IngestStore, "app.active", []byte(fmt.Sprintf(`{"userId":"u%d"}`, i)), "")
			require.NoError(t, err, "an ingest waiting for a second connection starves the pool")
		})
	}
	wg.Wait()
	require.Equal(t, 8, e.count("SELECT count(*) FROM bucket_memberships WHERE bucket_id = 'recent'"))
}

func TestEvaluateModeOnlyEvaluates(t *testing.T) {
	t.Parallel()
	e := newEnv(t, defs{"buckets/engaged-pro.yaml": proAndActive})
	// Another writer stored the event and the contact.
	e.contact("u", `{"plan":"pro"}`)
	e.events("u", "app.active", time.Minute)
	out, err := HandleIngest(e.ctx, e.deps, IngestEvaluate, "app.active",
		[]byte(`{"userId":"u","contactProperties":{"plan":"free"},"idempotencyKey":"k"}`), "run-1")
	require.NoError(t, err)
	require.False(t, out.Stored)
	require.Equal(t, []TransitionKind{Entered}, transitionKinds(out), "the stored contact, not the payload, decides")
	require.Equal(t, 1, e.count("SELECT count(*) FROM user_events WHERE event = 'app.active'"), "nothing stored")
	require.Equal(t, map[string]any{"plan": "pro"}, e.contactProps("u"), "the contact is not patched")
}

func TestIngestEventKeys(t *testing.T) {
	t.Parallel()
	e := newEnv(t, defs{"buckets/engaged-pro.yaml": proAndActive, "buckets/power.yaml": powerUsers})
	auto := IngestEventKeys([]string{"auto"}, e.deps.Buckets)
	require.ElementsMatch(t, []string{"app.active", "key.action", ContactUpdated}, auto)
	require.ElementsMatch(t, []string{"app.active", "key.action", ContactUpdated, "user.updated"},
		IngestEventKeys([]string{"auto", "user.updated", "app.active"}, e.deps.Buckets))
	require.Equal(t, []string{"*"}, IngestEventKeys([]string{"*"}, e.deps.Buckets))
}
