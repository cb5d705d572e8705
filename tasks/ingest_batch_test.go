package tasks

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bucketworker/bucket-worker/db"
	"github.com/bucketworker/bucket-worker/db/dbtest"
)

// batchDefs exercise what a batch must keep of single ingests: a join and
// a leave inside one batch, entry limits, property patches, a count.
var batchDefs = defs{
	"buckets/engaged-pro.yaml": proAndActive,
	"buckets/once.yaml":        "id: once\nname: Once\nentryLimit: once\ncriteria: {type: property, property: plan, operator: eq, value: pro}\n",
	"buckets/buyers.yaml": "id: buyers\nname: Buyers\ncriteria: {type: event, eventName: purchase, check: count, operator: gte, value: 2, " +
		"within: 30d, where: [{property: plan, operator: eq, value: pro}]}\n",
}

// element is one event of a batch as JSON.
func element(event, user, rest string) string {
	s := fmt.Sprintf(`{"event":%q,"userId":%q`, event, user)
	if rest != "" {
		s += "," + rest
	}
	return s + "}"
}

// batchElements are the events of the equivalence test, in the order a
// producer sends them; their per-user order by occurredAt is the one of
// single ingests (see singles).
func batchElements() []string {
	at := func(ago time.Duration) string {
		return fmt.Sprintf(`"occurredAt":%q`, t0.Add(-ago).Format(time.RFC3339Nano))
	}
	return []string{
		// u1 joins engaged-pro and once, leaves both, joins again (once:
		// suppressed) — in the order of occurredAt, which is not the order
		// sent.
		element("app.active", "u1", `"contactProperties":{"plan":"pro"},`+at(3*time.Minute)),
		element(ContactUpdated, "u1", `"contactProperties":{"plan":"pro","seats":3},`+at(time.Minute)),
		element("app.active", "u2", `"contactProperties":{"plan":"pro"},"userEmail":"U2@example.com"`),
		element(ContactUpdated, "u1", `"contactProperties":{"plan":"free"},`+at(2*time.Minute)),
		// u3: two pro purchases, the second sent first but older: the count
		// reaches 2 on the later one either way.
		element("purchase", "u3", `"properties":{"plan":"pro"},"idempotencyKey":"p-2",`+at(time.Minute)),
		element("purchase", "u3", `"properties":{"plan":"pro"},"idempotencyKey":"p-1",`+at(5*time.Minute)),
		element("purchase", "u3", `"properties":{"plan":"pro"},"idempotencyKey":"p-1",`+at(5*time.Minute)), // a duplicate
		element("purchase", "u3", `"properties":{"plan":"basic"},`+at(4*time.Minute)),
		element("bucket:entered:once", "u4", ``), // the worker's own: ignored
	}
}

// state is what an engine's database says after ingesting: memberships,
// transition keys, pushes and contact properties.
type state struct {
	Memberships []string
	Keys        []string
	Pushes      map[string]int
	Contacts    map[string]map[string]any
	Journeys    []string
}

func (e *env) state() state {
	e.t.Helper()
	var s state
	var rows []db.Membership
	require.NoError(e.t, e.db.NewSelect().Model(&rows).OrderExpr("m.user_id, m.bucket_id, m.entry_count").Scan(e.ctx))
	for _, m := range rows {
		s.Memberships = append(s.Memberships, fmt.Sprintf("%s %s %s #%d %s", m.UserID, m.BucketID, m.Status, m.EntryCount, deref(m.UserEmail)))
	}
	var events []db.UserEvent
	require.NoError(e.t, e.db.NewSelect().Model(&events).Where("e.source = 'bucket'").OrderExpr("e.idempotency_key").Scan(e.ctx))
	for _, ev := range events {
		s.Keys = append(s.Keys, *ev.IdempotencyKey)
	}
	e.deps.Dispatcher.flush(e.ctx)
	s.Pushes = e.hatchet.pushedKeys()
	s.Contacts = map[string]map[string]any{}
	var contacts []db.Contact
	require.NoError(e.t, e.db.NewSelect().Model(&contacts).Where("c.deleted_at IS NULL").Scan(e.ctx))
	for _, c := range contacts {
		s.Contacts[*c.ExternalID] = c.PropertyMap()
	}
	require.NoError(e.t, e.db.NewSelect().TableExpr("journey_states AS js").
		ColumnExpr("js.user_id || ' ' || js.journey_id || ' ' || js.status").OrderExpr("1").Scan(e.ctx, &s.Journeys))
	return s
}

// A batch gives what the same events ingested one by one give, in each
// user's order of occurredAt: the same memberships, transition keys,
// pushes and contacts.
func TestBatchEqualsSingleIngests(t *testing.T) {
	t.Parallel()
	elements := batchElements()

	// The singles: each user's events by occurredAt, then position.
	singles := newEnv(t, batchDefs)
	parsed, err := ParseIngestBatch([]byte(`{"events":[` + strings.Join(elements, ",") + `]}`))
	require.NoError(t, err)
	slices.SortStableFunc(parsed, func(a, b BatchElement) int {
		if a.Event.UserID != b.Event.UserID {
			return strings.Compare(a.Event.UserID, b.Event.UserID)
		}
		return occurredAt(a.Event, t0).Compare(occurredAt(b.Event, t0))
	})
	for _, el := range parsed {
		_, err := Ingest(singles.ctx, singles.deps, IngestRequest{Event: el.Event, Mode: IngestStore})
		require.NoError(t, err)
	}

	batched := newEnv(t, batchDefs)
	out, err := HandleBatch(batched.ctx, batched.deps, IngestStore, []byte(`{"events":[`+strings.Join(elements, ",")+`]}`), "")
	require.NoError(t, err)
	require.Equal(t, 7, out.Stored)
	require.Equal(t, 1, out.Duplicates)
	require.Equal(t, 1, out.Ignored)
	require.Empty(t, out.Invalid)

	want, got := singles.state(), batched.state()
	require.Equal(t, want, got)
	require.Equal(t, []string{
		"bucket:buyers:u3:entered:1",
		"bucket:engaged-pro:u1:entered:1", "bucket:engaged-pro:u1:entered:2", "bucket:engaged-pro:u1:left:1",
		"bucket:engaged-pro:u2:entered:1",
		"bucket:once:u1:entered:1", "bucket:once:u1:left:1", "bucket:once:u2:entered:1",
	}, got.Keys, "a join and a leave inside one batch; once suppresses the second join")
	require.Equal(t, map[string]any{"plan": "pro", "seats": 3.0}, got.Contacts["u1"])
	var kinds []string
	for _, tr := range out.Transitions {
		kinds = append(kinds, tr.UserID+" "+tr.BucketID+" "+string(tr.Transition))
	}
	require.Contains(t, kinds, "u1 engaged-pro left", "the report lists every transition of the batch")

	// The same batch again: every event is a duplicate, nothing changes.
	again, err := HandleBatch(batched.ctx, batched.deps, IngestStore, []byte(`{"events":[`+strings.Join(elements[4:7], ",")+`]}`), "")
	require.NoError(t, err)
	require.Equal(t, 3, again.Duplicates, "keys are kept across batches")
	require.Equal(t, got, batched.state())
}

// Random batches give what their events ingested one by one give, in each
// user's order of occurredAt: over buckets with entry limits, counts with
// a filter, property patches, journeys their events exit, an erased user,
// and keys repeated within and across batches.
func TestRandomBatchesEqualSingleIngests(t *testing.T) {
	t.Parallel()
	files := maps.Clone(batchDefs)
	files["buckets/period.yaml"] = "id: period\nname: Period\nentryLimit: once_per_period\nentryPeriod: 7d\n" +
		"criteria: {type: event, eventName: app.active, check: count, operator: gte, value: 2, within: 1h}\n"
	files["journeys/upsell.yaml"] = "id: upsell\ntrigger: {event: signup}\nexitOn: [{event: purchase, where: [{property: plan, operator: eq, value: pro}]}]\n"
	users := []string{"a", "b", "c", "d", "erased"}
	for seed := range uint64(12) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			t.Parallel()
			rng := rand.New(rand.NewPCG(seed, 16))
			pick := func(options ...string) string { return options[rng.IntN(len(options))] }
			randomElement := func() string {
				user := pick(users...)
				var rest []string
				if rng.IntN(2) == 0 {
					rest = append(rest, fmt.Sprintf(`"occurredAt":%q`, t0.Add(-time.Duration(rng.IntN(90))*time.Minute).Format(time.RFC3339)))
				}
				if rng.IntN(3) == 0 {
					rest = append(rest, fmt.Sprintf(`"idempotencyKey":"%s-%d"`, user, rng.IntN(4)))
				}
				if rng.IntN(3) == 0 {
					rest = append(rest, fmt.Sprintf(`"contactProperties":{"plan":%q}`, pick("pro", "free")))
				}
				event := pick("app.active", "app.active", "purchase", ContactUpdated, "bucket:left:period")
				if event == "purchase" {
					rest = append(rest, fmt.Sprintf(`"properties":{"plan":%q}`, pick("pro", "basic")))
				}
				return element(event, user, strings.Join(rest, ","))
			}
			var batches [][]string
			for range 2 + rng.IntN(2) {
				var batch []string
				for range 10 + rng.IntN(30) {
					batch = append(batch, randomElement())
				}
				batches = append(batches, batch)
			}

			singles, batched := newEnv(t, files), newEnv(t, files)
			for _, e := range []*env{singles, batched} {
				for _, u := range users {
					require.NoError(t, dbtest.InsertJourneyStates(e.ctx, e.db, []db.JourneyState{
						{UserID: u, JourneyID: "upsell", CurrentNodeID: "start", Status: "active"}}))
				}
			}
			for i, batch := range batches {
				if i == 1 { // after the first batch, which may have stored keys of the user
					for _, e := range []*env{singles, batched} {
						_, err := Forget(e.ctx, e.deps, "erased")
						require.NoError(t, err)
					}
				}
				parsed, err := ParseIngestBatch([]byte(`{"events":[` + strings.Join(batch, ",") + `]}`))
				require.NoError(t, err)
				slices.SortStableFunc(parsed, func(a, b BatchElement) int {
					if a.Event.UserID != b.Event.UserID {
						return strings.Compare(a.Event.UserID, b.Event.UserID)
					}
					return occurredAt(a.Event, t0).Compare(occurredAt(b.Event, t0))
				})
				var one BatchOutput
				for _, el := range parsed {
					res, err := Ingest(singles.ctx, singles.deps, IngestRequest{Event: el.Event, Mode: IngestStore})
					require.NoError(t, err)
					switch {
					case res.Stored:
						one.Stored++
					case res.Status == StatusIgnored:
						one.Ignored++
					default:
						one.Duplicates++
					}
					one.Transitions = append(one.Transitions, res.Transitions...)
				}
				out, err := HandleBatch(batched.ctx, batched.deps, IngestStore, []byte(`{"events":[`+strings.Join(batch, ",")+`]}`), "")
				require.NoError(t, err)
				require.Equal(t, []int{one.Stored, one.Duplicates, one.Ignored}, []int{out.Stored, out.Duplicates, out.Ignored},
					"stored, duplicates, ignored of %q", batch)
				require.ElementsMatch(t, withoutRowIDs(one.Transitions), withoutRowIDs(out.Transitions))
				singles.clock.Advance(time.Minute)
				batched.clock.Advance(time.Minute)
			}
			want := singles.state()
			require.NotEmpty(t, want.Keys, "the batches make transitions")
			require.Equal(t, want, batched.state(), "batches %q", batches)
		})
	}
}

// withoutRowIDs are the transitions without the ids of their rows, which
// two databases draw apart.
func withoutRowIDs(ts []Transition) []Transition {
	out := slices.Clone(ts)
	for i := range out {
		out[i].RowID = ""
	}
	return out
}

// A key another transaction stores while a batch runs — after the batch
// looked it up, before its insert — makes that element a duplicate, as a
// single ingest's would be: its contact patch is rolled back with it.
func TestBatchKeyStoredConcurrently(t *testing.T) {
	t.Parallel()
	e := newEnv(t, batchDefs)
	other, err := e.db.BeginTx(e.ctx, nil)
	require.NoError(t, err)
	defer other.Rollback()
	require.NoError(t, dbtest.InsertUserEvents(e.ctx, other, []db.UserEvent{{UserID: "w", Event: "app.active", IdempotencyKey: ptr("k"), OccurredAt: t0}}))

	done := make(chan BatchOutput)
	go func() {
		out, err := HandleBatch(e.ctx, e.deps, IngestStore, []byte(`{"events":[`+
			element("app.active", "a", `"idempotencyKey":"k","contactProperties":{"plan":"pro"}`)+","+
			element("app.active", "b", `"contactProperties":{"plan":"pro"}`)+`]}`), "")
		assert.NoError(t, err)
		done <- out
	}()
	time.Sleep(300 * time.Millisecond) // the batch waits on the key's index entry
	require.NoError(t, other.Commit())
	out := <-done
	require.Equal(t, 1, out.Stored)
	require.Equal(t, 1, out.Duplicates)
	c, err := db.ContactByUser(e.ctx, e.db, "a")
	require.NoError(t, err)
	require.Nil(t, c, "the duplicate wrote no contact")
	require.Equal(t, "none", e.status("engaged-pro", "a"))
	require.Equal(t, db.StatusActive, e.status("engaged-pro", "b"))
}

// An element without a key is stored under the run's key and its index: a
// retry of the run stores nothing twice.
func TestBatchRetryStoresNothingTwice(t *testing.T) {
	t.Parallel()
	e := newEnv(t, batchDefs)
	payload := []byte(`{"events":[` + element("app.active", "a", "") + "," + element("app.active", "b", "") + "," + element("app.active", "a", "") + `]}`)
	out, err := HandleBatch(e.ctx, e.deps, IngestStore, payload, "run-1")
	require.NoError(t, err)
	require.Equal(t, 3, out.Stored)
	keys := e.count("SELECT count(*) FROM user_events WHERE idempotency_key IN ('hatchet-run:run-1:0', 'hatchet-run:run-1:1', 'hatchet-run:run-1:2')")
	require.Equal(t, 3, keys)
	retry, err := HandleBatch(e.ctx, e.deps, IngestStore, payload, "run-1")
	require.NoError(t, err)
	require.Zero(t, retry.Stored)
	require.Equal(t, 3, retry.Duplicates)
	require.Equal(t, 3, e.count("SELECT count(*) FROM user_events WHERE source = 'ingest'"))
}

// An invalid element is reported and writes nothing; the others are
// applied.
func TestBatchInvalidElementAmongValidOnes(t *testing.T) {
	t.Parallel()
	e := newEnv(t, batchDefs)
	payload := `{"events":[` + strings.Join([]string{
		element("app.active", "ok-1", `"contactProperties":{"plan":"pro"}`),
		`{"userId":"no-event"}`,
		element("app.active", "", ``),
		element("app.active", "bad-key", `"idempotencyKey":"bucket:x"`),
		`"not an object"`,
		element("app.active", "bad-time", `"occurredAt":"yesterday"`),
		element("app.active", "ok-2", ``),
	}, ",") + `]}`
	out, err := HandleBatch(e.ctx, e.deps, IngestStore, []byte(payload), "")
	require.NoError(t, err)
	require.Equal(t, 2, out.Stored)
	var indexes []int
	for _, inv := range out.Invalid {
		indexes = append(indexes, inv.Index)
		require.NotEmpty(t, inv.Error)
	}
	require.Equal(t, []int{1, 2, 3, 4, 5}, indexes)
	require.Contains(t, out.Invalid[2].Error, "idempotencyKey")
	require.Equal(t, 2, e.count("SELECT count(*) FROM user_events WHERE source = 'ingest'"))
	require.Equal(t, 2, e.count("SELECT count(*) FROM contacts"), "no contact for an invalid element")
	require.Equal(t, db.StatusActive, e.status("engaged-pro", "ok-1"))
}

// A payload that is not a batch fails the run without a retry and writes
// nothing.
func TestMalformedBatchPayload(t *testing.T) {
	t.Parallel()
	e := newEnv(t, batchDefs)
	many := make([]string, MaxBatchEvents+1)
	for i := range many {
		many[i] = element("app.active", fmt.Sprintf("u%d", i), "")
	}
	for name, payload := range map[string]string{
		"a list":          `[` + element("app.active", "u", "") + `]`,
		"no events":       `{"event":"app.active","userId":"u"}`,
		"events not list": `{"events":{"userId":"u"}}`,
		"too many":        `{"events":[` + strings.Join(many, ",") + `]}`,
		"not JSON":        `{"events":[`,
		"invalid UTF-8":   "{\"events\":[{\"event\":\"a\",\"userId\":\"\xff\"}]}",
	} {
		_, err := HandleBatch(e.ctx, e.deps, IngestStore, []byte(payload), "")
		require.ErrorIs(t, err, ErrInvalidInput, name)
	}
	require.Zero(t, e.count("SELECT count(*) FROM user_events"))
	require.Zero(t, e.count("SELECT count(*) FROM contacts"))

}

// In evaluate mode a batch only evaluates, as single ingests would: the
// stored contacts decide, nothing is stored or patched, and an erased
// user is ignored.
func TestBatchEvaluateModeOnlyEvaluates(t *testing.T) {
	t.Parallel()
	e := newEnv(t, batchDefs)
	// Another writer stored the events and the contacts.
	for _, u := range []string{"a", "b", "gone"} {
		e.contact(u, `{"plan":"pro"}`)
		e.events(u, "app.active", time.Minute)
	}
	_, err := Forget(e.ctx, e.deps, "gone")
	require.NoError(t, err)
	out, err := HandleBatch(e.ctx, e.deps, IngestEvaluate, []byte(`{"events":[`+strings.Join([]string{
		element("app.active", "a", `"contactProperties":{"plan":"free"}`),
		element("app.active", "b", ``),
		element("app.active", "a", ``),
		element("app.active", "gone", ``),
	}, ",")+`]}`), "run-1")
	require.NoError(t, err)
	require.Zero(t, out.Stored)
	require.Zero(t, out.Duplicates)
	require.Equal(t, 1, out.Ignored, "the erased user")
	var joined []string
	for _, tr := range out.Transitions {
		joined = append(joined, tr.UserID+" "+tr.BucketID+" "+string(tr.Transition))
	}
	require.ElementsMatch(t, []string{"a engaged-pro entered", "a once entered", "b engaged-pro entered"}, joined,
		"once is a candidate only for the event that names its property")
	require.Equal(t, 3, e.count("SELECT count(*) FROM user_events WHERE event = 'app.active'"), "nothing stored")
	require.Equal(t, map[string]any{"plan": "pro"}, e.contactProps("a"), "the contact is not patched")
	require.Equal(t, "none", e.status("engaged-pro", "gone"))
}
