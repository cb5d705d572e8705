package db_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"testing/fstest"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bucketworker/bucket-worker/buckets"
	"github.com/bucketworker/bucket-worker/db"
	"github.com/bucketworker/bucket-worker/db/dbtest"
)

// conformanceNow is the instant every case is evaluated at; microseconds
// included, since that is Postgres' precision.
var conformanceNow = time.Date(2026, 11, 29, 12, 0, 0, 123456000, time.UTC)

type ago struct {
	event string
	ago   time.Duration
}

type conformanceCase struct {
	name     string
	criteria string // JSON
	props    string // contact properties JSON; "" = no contact row at all
	events   []ago
	want     bool
}

const (
	day  = 24 * time.Hour
	week = 7 * day
)

func many(event string, n int, at time.Duration) []ago {
	out := make([]ago, n)
	for i := range out {
		out[i] = ago{event, at}
	}
	return out
}

var conformanceCases = []conformanceCase{
	// Window boundaries: occurred_at >= now - within, inclusive.
	{"exists in window", `{"type":"event","eventName":"a","check":"exists","within":"7d"}`, `{}`, []ago{{"a", 6 * day}}, true},
	{"exists exactly at cutoff", `{"type":"event","eventName":"a","check":"exists","within":"7d"}`, `{}`, []ago{{"a", week}}, true},
	{"exists a microsecond before cutoff", `{"type":"event","eventName":"a","check":"exists","within":"7d"}`, `{}`, []ago{{"a", week + time.Microsecond}}, false},
	{"exists with future event", `{"type":"event","eventName":"a","check":"exists","within":"1h"}`, `{}`, []ago{{"a", -time.Hour}}, true},
	{"exists other event only", `{"type":"event","eventName":"a","check":"exists","within":"7d"}`, `{}`, []ago{{"b", time.Hour}}, false},
	{"exists without window, old event", `{"type":"event","eventName":"a","check":"exists"}`, `{}`, []ago{{"a", 400 * day}}, true},
	{"not_exists in window", `{"type":"event","eventName":"a","check":"not_exists","within":"7d"}`, `{}`, []ago{{"a", day}}, false},
	{"not_exists only old events", `{"type":"event","eventName":"a","check":"not_exists","within":"7d"}`, `{}`, []ago{{"a", 8 * day}}, true},
	{"not_exists at cutoff", `{"type":"event","eventName":"a","check":"not_exists","within":"7d"}`, `{}`, []ago{{"a", week}}, false},
	{"not_exists never fired", `{"type":"event","eventName":"a","check":"not_exists","within":"7d"}`, `{}`, nil, true},
	{"not_exists no contact", `{"type":"event","eventName":"a","check":"not_exists","within":"7d"}`, ``, nil, true},
	{"window of minutes and seconds", `{"type":"event","eventName":"a","check":"exists","within":"1m30s"}`, `{}`, []ago{{"a", 90 * time.Second}}, true},
	{"window of minutes and seconds, just out", `{"type":"event","eventName":"a","check":"exists","within":"1m30s"}`, `{}`, []ago{{"a", 91 * time.Second}}, false},

	// Count operators.
	{"count gte met", `{"type":"event","eventName":"a","check":"count","operator":"gte","value":3,"within":"30d"}`, `{}`, many("a", 3, day), true},
	{"count gte short", `{"type":"event","eventName":"a","check":"count","operator":"gte","value":3,"within":"30d"}`, `{}`, many("a", 2, day), false},
	{"count gte with aged-out events", `{"type":"event","eventName":"a","check":"count","operator":"gte","value":3,"within":"30d"}`, `{}`, append(many("a", 2, day), ago{"a", 31 * day}), false},
	{"count gt equal", `{"type":"event","eventName":"a","check":"count","operator":"gt","value":2,"within":"30d"}`, `{}`, many("a", 2, day), false},
	{"count gt above", `{"type":"event","eventName":"a","check":"count","operator":"gt","value":2,"within":"30d"}`, `{}`, many("a", 3, day), true},
	{"count lt zero events", `{"type":"event","eventName":"a","check":"count","operator":"lt","value":2,"within":"30d"}`, `{}`, nil, true},
	{"count lt reached", `{"type":"event","eventName":"a","check":"count","operator":"lt","value":2,"within":"30d"}`, `{}`, many("a", 2, day), false},
	{"count lte at value", `{"type":"event","eventName":"a","check":"count","operator":"lte","value":2,"within":"30d"}`, `{}`, many("a", 2, day), true},
	{"count eq exact", `{"type":"event","eventName":"a","check":"count","operator":"eq","value":2,"within":"30d"}`, `{}`, many("a", 2, day), true},
	{"count eq off by one", `{"type":"event","eventName":"a","check":"count","operator":"eq","value":2,"within":"30d"}`, `{}`, many("a", 3, day), false},
	{"count eq 0 with window", `{"type":"event","eventName":"a","check":"count","operator":"eq","value":0,"within":"1d"}`, `{}`, []ago{{"a", 2 * day}}, true},
	{"count without operator", `{"type":"event","eventName":"a","check":"count","within":"1d"}`, `{}`, []ago{{"a", time.Hour}}, true},
	{"count without operator, none", `{"type":"event","eventName":"a","check":"count","within":"1d"}`, `{}`, nil, false},
	{"count without window", `{"type":"event","eventName":"a","check":"count","operator":"gte","value":2}`, `{}`, []ago{{"a", 100 * day}, {"a", 200 * day}}, true},

	// Properties: absent, null, present; JSON type strictness.
	{"eq string", `{"type":"property","property":"plan","operator":"eq","value":"trial"}`, `{"plan":"trial"}`, nil, true},
	{"eq string other case", `{"type":"property","property":"plan","operator":"eq","value":"trial"}`, `{"plan":"Trial"}`, nil, false},
	{"eq absent", `{"type":"property","property":"plan","operator":"eq","value":"trial"}`, `{}`, nil, false},
	{"eq number vs string", `{"type":"property","property":"n","operator":"eq","value":1}`, `{"n":"1"}`, nil, false},
	{"eq 1 equals 1.0", `{"type":"property","property":"n","operator":"eq","value":1}`, `{"n":1.0}`, nil, true},
	{"eq true vs string", `{"type":"property","property":"b","operator":"eq","value":true}`, `{"b":"true"}`, nil, false},
	{"eq bool", `{"type":"property","property":"b","operator":"eq","value":false}`, `{"b":false}`, nil, true},
	{"eq against object", `{"type":"property","property":"o","operator":"eq","value":"x"}`, `{"o":{"x":1}}`, nil, false},
	{"neq absent", anchored(`{"type":"property","property":"converted","operator":"neq","value":true}`), `{"anchor":1}`, nil, true},
	{"neq null", anchored(`{"type":"property","property":"converted","operator":"neq","value":true}`), `{"anchor":1,"converted":null}`, nil, true},
	{"neq equal", anchored(`{"type":"property","property":"converted","operator":"neq","value":true}`), `{"anchor":1,"converted":true}`, nil, false},
	{"neq other type", anchored(`{"type":"property","property":"converted","operator":"neq","value":true}`), `{"anchor":1,"converted":"true"}`, nil, true},
	{"gt number", `{"type":"property","property":"score","operator":"gt","value":2.5}`, `{"score":3}`, nil, true},
	{"gt equal", `{"type":"property","property":"score","operator":"gt","value":2.5}`, `{"score":2.5}`, nil, false},
	{"gte equal", `{"type":"property","property":"score","operator":"gte","value":2.5}`, `{"score":2.5}`, nil, true},
	{"gt numeric string", `{"type":"property","property":"score","operator":"gt","value":1}`, `{"score":"5"}`, nil, false},
	{"lt negative", `{"type":"property","property":"score","operator":"lt","value":0}`, `{"score":-0.5}`, nil, true},
	{"lte null", `{"type":"property","property":"score","operator":"lte","value":3}`, `{"score":null}`, nil, false},
	{"lte bool", `{"type":"property","property":"score","operator":"lte","value":3}`, `{"score":true}`, nil, false},
	{"contains", `{"type":"property","property":"email","operator":"contains","value":"@acme."}`, `{"email":"jo@acme.io"}`, nil, true},
	{"contains is case-sensitive", `{"type":"property","property":"email","operator":"contains","value":"@ACME."}`, `{"email":"jo@acme.io"}`, nil, false},
	{"contains on number", `{"type":"property","property":"n","operator":"contains","value":"1"}`, `{"n":123}`, nil, false},
	{"contains empty string", `{"type":"property","property":"s","operator":"contains","value":""}`, `{"s":""}`, nil, true},
	{"exists zero", `{"type":"property","property":"n","operator":"exists"}`, `{"n":0}`, nil, true},
	{"exists empty string", `{"type":"property","property":"s","operator":"exists"}`, `{"s":""}`, nil, true},
	{"exists false", `{"type":"property","property":"b","operator":"exists"}`, `{"b":false}`, nil, true},
	{"exists null", `{"type":"property","property":"b","operator":"exists"}`, `{"b":null}`, nil, false},
	{"exists no contact", `{"type":"property","property":"b","operator":"exists"}`, ``, nil, false},
	{"not_exists null", anchored(`{"type":"property","property":"b","operator":"not_exists"}`), `{"anchor":1,"b":null}`, nil, true},
	{"not_exists present", anchored(`{"type":"property","property":"b","operator":"not_exists"}`), `{"anchor":1,"b":0}`, nil, false},
	{"count lt without window, no events", anchored(`{"type":"event","eventName":"a","check":"count","operator":"lt","value":1}`), `{"anchor":1}`, nil, true},
	{"not_exists without window", anchored(`{"type":"event","eventName":"a","check":"not_exists"}`), `{"anchor":1}`, []ago{{"a", 900 * day}}, false},
	{"key with dot is one key", `{"type":"property","property":"a.b","operator":"eq","value":1}`, `{"a":{"b":1},"a.b":2}`, nil, false},
	{"properties not an object", `{"type":"property","property":"a","operator":"exists"}`, `[1,2]`, nil, false},
	{"unicode value", `{"type":"property","property":"city","operator":"eq","value":"Zürich"}`, `{"city":"Zürich"}`, nil, true},

	// Numbers are IEEE-754 doubles, as JavaScript reads JSON (§3.1).
	{"eq rounds to the same double", `{"type":"property","property":"n","operator":"eq","value":5}`, `{"n":5.0000000000000001}`, nil, true},
	{"neq rounds to the same double", anchored(`{"type":"property","property":"n","operator":"neq","value":5}`), `{"anchor":1,"n":5.0000000000000001}`, nil, false},
	{"eq beyond 2^53", `{"type":"property","property":"n","operator":"eq","value":9007199254740992}`, `{"n":9007199254740993}`, nil, true},
	{"criteria value beyond 2^53", `{"type":"property","property":"n","operator":"eq","value":9007199254740993}`, `{"n":9007199254740992}`, nil, true},
	{"gte beyond 2^53", `{"type":"property","property":"n","operator":"gt","value":9007199254740992}`, `{"n":9007199254740993}`, nil, false},
	{"distinct doubles differ", `{"type":"property","property":"n","operator":"eq","value":0.1}`, `{"n":0.10000000000000002}`, nil, false},
	{"gt beyond the double range", `{"type":"property","property":"n","operator":"gt","value":1e308}`, `{"n":1e309}`, nil, true},
	{"lt below the double range", `{"type":"property","property":"n","operator":"lt","value":-1e308}`, `{"n":-1e309}`, nil, true},
	{"Infinity equals Infinity", `{"type":"property","property":"n","operator":"eq","value":1e309}`, `{"n":2e400}`, nil, true},
	{"largest double is not Infinity", `{"type":"property","property":"n","operator":"eq","value":1e309}`, `{"n":1.7976931348623157e308}`, nil, false},
	{"lte Infinity", `{"type":"property","property":"n","operator":"lte","value":1e309}`, `{"n":1.7976931348623157e308}`, nil, true},
	{"halfway past the largest double is Infinity", `{"type":"property","property":"n","operator":"eq","value":1e309}`, `{"n":179769313486231580793728971405303415079934132710037826936173778980444968292764750946649017977587207096330286416692887910946555547851940402630657488671505820681908902000708383676273854845817711531764475730270069855571366959622842914819860834936475292719074168444365510704342711559699508093042880177904174497792}`, nil, true},
	{"just under halfway is the largest double", `{"type":"property","property":"n","operator":"eq","value":1.7976931348623157e308}`, `{"n":1.7976931348623158e308}`, nil, true},
	{"underflow is zero", `{"type":"property","property":"n","operator":"eq","value":0}`, `{"n":1e-400}`, nil, true},
	{"least subnormal", `{"type":"property","property":"n","operator":"gt","value":0}`, `{"n":4e-324}`, nil, true},
	{"out-of-range number hides no other property", `{"type":"composite","operator":"and","conditions":[{"type":"property","property":"plan","operator":"eq","value":"pro"},{"type":"property","property":"score","operator":"gte","value":2}]}`,
		`{"big":1e309,"plan":"pro","score":3}`, nil, true},
	{"number is not a numeric string", `{"type":"property","property":"n","operator":"gt","value":1}`, `{"n":"1e309"}`, nil, false},

	// Nested and/or.
	{"and all true", `{"type":"composite","operator":"and","conditions":[{"type":"property","property":"plan","operator":"eq","value":"trial"},{"type":"event","eventName":"a","check":"exists","within":"1d"}]}`, `{"plan":"trial"}`, []ago{{"a", time.Hour}}, true},
	{"and one false", `{"type":"composite","operator":"and","conditions":[{"type":"property","property":"plan","operator":"eq","value":"trial"},{"type":"event","eventName":"a","check":"exists","within":"1d"}]}`, `{"plan":"trial"}`, []ago{{"a", 2 * day}}, false},
	{"or one true", `{"type":"composite","operator":"or","conditions":[{"type":"property","property":"plan","operator":"eq","value":"pro"},{"type":"event","eventName":"a","check":"exists"}]}`, `{"plan":"trial"}`, []ago{{"a", 90 * day}}, true},
	{"or none true", `{"type":"composite","operator":"or","conditions":[{"type":"property","property":"plan","operator":"eq","value":"pro"},{"type":"event","eventName":"a","check":"exists"}]}`, `{"plan":"trial"}`, nil, false},
	{"trial expiring", trialCriteria, `{"plan":"trial","trial_days_left":2}`, nil, true},
	{"trial expiring, converted", trialCriteria, `{"plan":"trial","trial_days_left":2,"converted":true}`, nil, false},
	{"trial expiring, by flag", trialCriteria, `{"plan":"trial","trial_days_left":9,"trial_ending":true}`, nil, true},
	{"trial expiring, too early", trialCriteria, `{"plan":"trial","trial_days_left":9}`, nil, false},
	{"lapsed active, lapsed", lapsedCriteria, `{}`, []ago{{"app.active", 10 * day}}, true},
	{"lapsed active, never active", lapsedCriteria, `{}`, nil, false},
	{"lapsed active, active", lapsedCriteria, `{}`, []ago{{"app.active", 10 * day}, {"app.active", day}}, false},
	{"deep nesting", `{"type":"composite","operator":"or","conditions":[{"type":"composite","operator":"and","conditions":[{"type":"property","property":"a","operator":"exists"},{"type":"composite","operator":"or","conditions":[{"type":"event","eventName":"x","check":"count","operator":"gte","value":2,"within":"2d"},{"type":"property","property":"b","operator":"lt","value":0}]}]},{"type":"property","property":"vip","operator":"eq","value":true}]}`,
		`{"a":1,"b":-1}`, []ago{{"x", day}}, true},
	{"deep nesting, no branch", `{"type":"composite","operator":"or","conditions":[{"type":"composite","operator":"and","conditions":[{"type":"property","property":"a","operator":"exists"},{"type":"composite","operator":"or","conditions":[{"type":"event","eventName":"x","check":"count","operator":"gte","value":2,"within":"2d"},{"type":"property","property":"b","operator":"lt","value":0}]}]},{"type":"property","property":"vip","operator":"eq","value":true}]}`,
		`{"a":1,"b":1}`, []ago{{"x", day}, {"x", 3 * day}}, false},
}

// anchored joins a leaf that alone would be rejected as unbounded with a
// bounded one that holds for the case's contact (property anchor).
func anchored(leaf string) string {
	return `{"type":"composite","operator":"and","conditions":[{"type":"property","property":"anchor","operator":"exists"},` + leaf + `]}`
}

const trialCriteria = `{"type":"composite","operator":"and","conditions":[
	{"type":"property","property":"plan","operator":"eq","value":"trial"},
	{"type":"composite","operator":"or","conditions":[
		{"type":"property","property":"trial_days_left","operator":"lte","value":3},
		{"type":"property","property":"trial_ending","operator":"eq","value":true}]},
	{"type":"property","property":"converted","operator":"neq","value":true}]}`

const lapsedCriteria = `{"type":"composite","operator":"and","conditions":[
	{"type":"event","eventName":"app.active","check":"exists"},
	{"type":"event","eventName":"app.active","check":"not_exists","within":"7d"}]}`

// TestConformance runs every case through the Go evaluator over memory,
// the Go evaluator over the database, and the SQL compiler — and the
// compiled negation must say the opposite. They must agree with each other
// and with the expected answer.
func TestConformance(t *testing.T) {
	t.Parallel()
	require.GreaterOrEqual(t, len(conformanceCases), 40)
	ctx := context.Background()
	conn, _ := dbtest.New(t)

	for i, tc := range conformanceCases {
		t.Run(tc.name, func(t *testing.T) {
			criteria := loadCriteria(t, tc.criteria)
			user := fmt.Sprintf("conf-%03d", i)

			mem := buckets.MemoryFacts{Properties: buckets.Properties{}}
			if tc.props != "" {
				mem.Properties = buckets.DecodeProperties([]byte(tc.props))
				require.NoError(t, dbtest.InsertContact(ctx, conn, &db.Contact{ExternalID: &user, Properties: json.RawMessage(tc.props)}))
			}
			var rows []db.UserEvent
			for _, e := range tc.events {
				at := conformanceNow.Add(-e.ago)
				mem.Events = append(mem.Events, buckets.Event{Name: e.event, OccurredAt: at})
				rows = append(rows, db.UserEvent{UserID: user, Event: e.event, OccurredAt: at})
			}
			require.NoError(t, dbtest.InsertUserEvents(ctx, conn, rows))

			inMemory, err := buckets.Evaluate(ctx, criteria, conformanceNow, mem)
			require.NoError(t, err)
			require.Equal(t, tc.want, inMemory, "Go evaluator over memory")

			overDB, err := buckets.Evaluate(ctx, criteria, conformanceNow, db.UserFacts{IDB: conn, UserID: user, Properties: mem.Properties})
			require.NoError(t, err)
			require.Equal(t, tc.want, overDB, "Go evaluator over the database")

			// explain is the trace of the same evaluator: its verdict is the
			// answer, and every leaf's result follows from what it observed.
			explained, trace, err := buckets.Explain(ctx, criteria, conformanceNow, db.UserFacts{IDB: conn, UserID: user, Properties: mem.Properties})
			require.NoError(t, err)
			require.Equal(t, tc.want, explained, "explain")
			requireTraceConsistent(t, trace)

			subject := db.Subject{UserID: "u.user_id", Properties: "c.properties"}
			sqlHolds := func(p db.Predicate) bool {
				var holds bool
				err := conn.NewSelect().
					TableExpr("(SELECT ?::text AS user_id) AS u", user).
					Join("LEFT JOIN contacts AS c ON c.external_id = u.user_id AND c.deleted_at IS NULL").
					ColumnExpr(p.SQL, p.Args...).
					Scan(ctx, &holds)
				require.NoError(t, err, "SQL: %s", p.SQL)
				return holds
			}
			p := db.CompileCriteria(criteria, conformanceNow, subject)
			require.Equal(t, tc.want, sqlHolds(p), "SQL compiler: %s", p.SQL)
			n := db.CompileNegation(criteria, conformanceNow, subject)
			require.Equal(t, !tc.want, sqlHolds(n), "negated SQL: %s", n.SQL)
		})
	}
}

func loadCriteria(t *testing.T, criteria string) buckets.Condition {
	t.Helper()
	bs, report := buckets.Load(fstest.MapFS{"buckets/b.json": {Data: []byte(`{"id":"b","name":"B","criteria":` + criteria + `}`)}})
	require.NoError(t, report.Err())
	require.Len(t, bs, 1)
	return bs[0].Criteria
}

// requireTraceConsistent checks that each traced leaf's result is what its
// condition gives for the value or count it observed.
func requireTraceConsistent(t *testing.T, trace buckets.Trace) {
	t.Helper()
	require.NotEmpty(t, trace.Leaves)
	for _, l := range trace.Leaves {
		switch c := l.Condition.(type) {
		case *buckets.PropertyCondition:
			require.Equal(t, c.Holds(l.Value, l.Present), l.Result, "leaf %s", l.Path)
		case *buckets.EventCondition:
			require.Equal(t, c.HoldsForCount(l.Count), l.Result, "leaf %s", l.Path)
			require.Equal(t, c.Cutoff(conformanceNow), l.Cutoff, "leaf %s", l.Path)
		}
	}
}
