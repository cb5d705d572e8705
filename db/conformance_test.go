package db_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
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

// fired is an event of a case with its properties ("" for none).
type fired struct {
	event string
	ago   time.Duration
	props string
}

// richCase is a conformance case whose events carry properties.
type richCase struct {
	name     string
	criteria string
	props    string
	events   []fired
	want     bool
}

// purchases is one purchase a day ago per properties document.
func purchases(docs ...string) []fired {
	out := make([]fired, len(docs))
	for i, doc := range docs {
		out[i] = fired{"purchase", day, doc}
	}
	return out
}

// countWhere is purchase count gte n within 30d where the conditions.
func countWhere(n int, where string) string {
	return fmt.Sprintf(`{"type":"event","eventName":"purchase","check":"count","operator":"gte","value":%d,"within":"30d","where":[%s]}`, n, where)
}

// aggregate is purchase <check>(amount) <op> <value> within 30d.
func aggregate(check, op, value string) string {
	return fmt.Sprintf(`{"type":"event","eventName":"purchase","check":%q,"property":"amount","operator":%q,"value":%s,"within":"30d"}`, check, op, value)
}

// relative is the property t <op> <duration>.
func relative(op, span string) string {
	return fmt.Sprintf(`{"type":"property","property":"t","operator":%q,"value":%q}`, op, span)
}

// richCases hold the event filters, aggregates and relative dates of
// contract §3.5 and §3.6. The clock is conformanceNow,
// 2026-11-29T12:00:00.123456Z.
var richCases = []richCase{
	// where filters the events counted.
	{"where eq counts matching events", countWhere(2, `{"property":"plan","operator":"eq","value":"pro"}`), `{}`, purchases(`{"plan":"pro"}`, `{"plan":"pro","amount":5}`), true},
	{"where eq skips other events", countWhere(2, `{"property":"plan","operator":"eq","value":"pro"}`), `{}`, purchases(`{"plan":"pro"}`, `{"plan":"basic"}`), false},
	{"where on events without properties", countWhere(1, `{"property":"plan","operator":"exists"}`), `{}`, purchases(``, `{}`), false},
	{"where neq keeps absent keys", countWhere(1, `{"property":"plan","operator":"neq","value":"pro"}`), `{}`, purchases(`{"plan":"pro"}`, ``), true},
	{"where neq drops the value", countWhere(1, `{"property":"plan","operator":"neq","value":"pro"}`), `{}`, purchases(`{"plan":"pro"}`), false},
	{"where not_exists keeps null", countWhere(1, `{"property":"coupon","operator":"not_exists"}`), `{}`, purchases(`{"coupon":null}`), true},
	{"where not_exists drops present", countWhere(1, `{"property":"coupon","operator":"not_exists"}`), `{}`, purchases(`{"coupon":""}`), false},
	{"where is type-strict", countWhere(1, `{"property":"seats","operator":"eq","value":1}`), `{}`, purchases(`{"seats":"1"}`), false},
	{"where numbers are doubles", countWhere(1, `{"property":"seats","operator":"eq","value":5}`), `{}`, purchases(`{"seats":5.0000000000000001}`), true},
	{"where reads the event, not the contact", countWhere(1, `{"property":"plan","operator":"eq","value":"pro"}`), `{"plan":"pro"}`, purchases(`{"plan":"basic"}`), false},
	{"where on properties that are not an object", countWhere(1, `{"property":"plan","operator":"not_exists"}`), `{}`, purchases(`[1]`), true},
	{"where and window", countWhere(1, `{"property":"plan","operator":"eq","value":"pro"}`), `{}`, []fired{{"purchase", 31 * day, `{"plan":"pro"}`}, {"purchase", day, `{"plan":"basic"}`}}, false},
	{"where with every condition", countWhere(1, `{"property":"plan","operator":"eq","value":"pro"},{"property":"amount","operator":"gt","value":10}`), `{}`, purchases(`{"plan":"pro","amount":5}`, `{"plan":"basic","amount":50}`), false},
	{"exists where", `{"type":"event","eventName":"purchase","check":"exists","where":[{"property":"plan","operator":"contains","value":"pro"}]}`, `{}`, purchases(`{"plan":"pro-annual"}`), true},
	{"not_exists where, other events only", `{"type":"event","eventName":"purchase","check":"not_exists","within":"7d","where":[{"property":"plan","operator":"eq","value":"pro"}]}`, `{}`, purchases(`{"plan":"basic"}`), true},
	{"not_exists where, a match", `{"type":"event","eventName":"purchase","check":"not_exists","within":"7d","where":[{"property":"plan","operator":"eq","value":"pro"}]}`, `{}`, purchases(`{"plan":"pro"}`), false},

	// Aggregates: sum, avg, min and max of a numeric event property.
	{"sum reaches", aggregate("sum", "gte", "100"), `{}`, purchases(`{"amount":60}`, `{"amount":40}`), true},
	{"sum falls short", aggregate("sum", "gte", "100"), `{}`, purchases(`{"amount":60}`, `{"amount":39.99}`), false},
	{"sum mixes integers and floats", aggregate("sum", "eq", "3.5"), `{}`, purchases(`{"amount":1}`, `{"amount":2.5}`), true},
	{"sum is exact over the doubles' decimals", aggregate("sum", "eq", "0.3"), `{}`, purchases(`{"amount":0.1}`, `{"amount":0.2}`), true},
	{"sum reads each value as a double", aggregate("sum", "eq", "9007199254740992"), `{}`, purchases(`{"amount":9007199254740993}`), true},
	{"sum ignores values that are not numbers", aggregate("sum", "lt", "1"), `{}`, purchases(`{"amount":"100"}`, `{"amount":null}`, `{"amount":true}`, `{}`), true},
	{"sum of nothing is 0", aggregate("sum", "eq", "0"), `{}`, nil, true},
	{"sum of nothing is 0, gt", aggregate("sum", "gt", "0"), `{}`, nil, false},
	{"sum with Infinity", aggregate("sum", "gt", "1e308"), `{}`, purchases(`{"amount":1e309}`, `{"amount":5}`), true},
	{"sum of both infinities is no number, gte", aggregate("sum", "gte", "0"), `{}`, purchases(`{"amount":1e309}`, `{"amount":-1e309}`), false},
	{"sum of both infinities is no number, lt", aggregate("sum", "lt", "0"), `{}`, purchases(`{"amount":1e309}`, `{"amount":-1e309}`), false},
	{"sum of large values does not overflow", aggregate("sum", "gt", "1.7976931348623157e308"), `{}`, purchases(`{"amount":1e308}`, `{"amount":1e308}`), true},
	{"sum window", aggregate("sum", "gte", "100"), `{}`, []fired{{"purchase", 31 * day, `{"amount":100}`}, {"purchase", day, `{"amount":1}`}}, false},
	{"sum with where", `{"type":"event","eventName":"purchase","check":"sum","property":"amount","operator":"gte","value":100,"within":"30d","where":[{"property":"plan","operator":"eq","value":"pro"}]}`,
		`{}`, purchases(`{"plan":"pro","amount":60}`, `{"plan":"basic","amount":60}`), false},
	{"avg reaches", aggregate("avg", "gte", "10"), `{}`, purchases(`{"amount":5}`, `{"amount":15}`), true},
	{"avg falls short", aggregate("avg", "gte", "10"), `{}`, purchases(`{"amount":5}`, `{"amount":14}`), false},
	{"avg is exact", aggregate("avg", "eq", "0.1"), `{}`, purchases(`{"amount":0.1}`, `{"amount":0.1}`, `{"amount":0.1}`), true},
	{"avg counts only numbers", aggregate("avg", "eq", "4"), `{}`, purchases(`{"amount":4}`, `{"amount":"40"}`), true},
	{"avg of nothing is false", aggregate("avg", "lt", "100"), `{}`, purchases(`{"amount":null}`), false},
	{"avg with Infinity", aggregate("avg", "eq", "1e309"), `{}`, purchases(`{"amount":2e400}`, `{"amount":1}`), true},
	{"min", aggregate("min", "lte", "5"), `{}`, purchases(`{"amount":7}`, `{"amount":5}`), true},
	{"min above", aggregate("min", "lt", "5"), `{}`, purchases(`{"amount":7}`, `{"amount":5}`), false},
	{"max", aggregate("max", "gt", "100"), `{}`, purchases(`{"amount":100}`, `{"amount":99}`), false},
	{"max of doubles", aggregate("max", "eq", "5"), `{}`, purchases(`{"amount":5.0000000000000001}`, `{"amount":-1e309}`), true},
	{"min of nothing is false", aggregate("min", "gte", "0"), `{}`, purchases(`{"amount":"7"}`), false},
	{"max of nothing is false", aggregate("max", "lte", "0"), `{}`, nil, false},

	// Relative dates, at both bounds of each window.
	{"within_next inside", relative("within_next", "3d"), `{"t":"2026-12-01T00:00:00Z"}`, nil, true},
	{"within_next at now", relative("within_next", "3d"), `{"t":"2026-11-29T12:00:00.123456Z"}`, nil, true},
	{"within_next a microsecond ago", relative("within_next", "3d"), `{"t":"2026-11-29T12:00:00.123455Z"}`, nil, false},
	{"within_next at the far bound", relative("within_next", "3d"), `{"t":"2026-12-02T12:00:00.123456Z"}`, nil, true},
	{"within_next a microsecond past the far bound", relative("within_next", "3d"), `{"t":"2026-12-02T12:00:00.123457Z"}`, nil, false},
	{"within_next drops nanoseconds", relative("within_next", "3d"), `{"t":"2026-12-02T12:00:00.123456999Z"}`, nil, true},
	{"within_next date only", relative("within_next", "3d"), `{"t":"2026-12-01"}`, nil, true},
	{"within_next date only is midnight UTC", relative("within_next", "3d"), `{"t":"2026-12-03"}`, nil, false},
	{"within_next with an offset", relative("within_next", "3d"), `{"t":"2026-12-02T13:00:00+01:00"}`, nil, true},
	{"within_next with an offset a day ahead", relative("within_next", "3d"), `{"t":"2026-12-03T01:00:00+14:00"}`, nil, true},
	{"within_next with a negative offset", relative("within_next", "3d"), `{"t":"2026-12-02T07:00:00-05:00"}`, nil, true},
	{"within_next with a negative offset, out", relative("within_next", "3d"), `{"t":"2026-12-02T08:00:00-05:00"}`, nil, false},
	{"within_last inside", relative("within_last", "1d"), `{"t":"2026-11-29T00:00:00Z"}`, nil, true},
	{"within_last at the far bound", relative("within_last", "1d"), `{"t":"2026-11-28T12:00:00.123456Z"}`, nil, true},
	{"within_last past the far bound", relative("within_last", "1d"), `{"t":"2026-11-28T12:00:00.123455Z"}`, nil, false},
	{"within_last with an offset a day behind", relative("within_last", "1d"), `{"t":"2026-11-27T23:00:00-14:00"}`, nil, true},
	{"within_last in the future", relative("within_last", "1d"), `{"t":"2026-11-30"}`, nil, false},
	{"before_last", relative("before_last", "7d"), `{"t":"2026-11-01"}`, nil, true},
	{"before_last at the bound", relative("before_last", "7d"), `{"t":"2026-11-22T12:00:00.123456Z"}`, nil, false},
	{"before_last just before the bound", relative("before_last", "7d"), `{"t":"2026-11-22T12:00:00.123455Z"}`, nil, true},
	{"after_next", relative("after_next", "30d"), `{"t":"2027-06-01"}`, nil, true},
	{"after_next at the bound", relative("after_next", "30d"), `{"t":"2026-12-29T12:00:00.123456Z"}`, nil, false},
	{"after_next just after the bound", relative("after_next", "30d"), `{"t":"2026-12-29T12:00:00.123457Z"}`, nil, true},
	{"relative date absent", relative("within_next", "3d"), `{}`, nil, false},
	{"relative date null", relative("before_last", "3d"), `{"t":null}`, nil, false},
	{"relative date number", relative("before_last", "3d"), `{"t":1764547200}`, nil, false},
	{"relative date unparsable", relative("before_last", "3d"), `{"t":"last tuesday"}`, nil, false},
	{"relative date impossible day", relative("before_last", "3d"), `{"t":"2026-02-30"}`, nil, false},
	{"relative date leap day", relative("before_last", "3d"), `{"t":"2024-02-29"}`, nil, true},
	{"relative date impossible hour", relative("before_last", "3d"), `{"t":"2026-01-01T24:00:00Z"}`, nil, false},
	{"relative date leap second", relative("before_last", "3d"), `{"t":"2016-12-31T23:59:60Z"}`, nil, false},
	{"relative date lower-case separators", relative("before_last", "3d"), `{"t":"2026-01-01t00:00:00z"}`, nil, false},
	{"relative date without offset", relative("before_last", "3d"), `{"t":"2026-01-01T00:00:00"}`, nil, false},
	{"relative date with a space", relative("before_last", "3d"), `{"t":"2026-01-01 00:00:00Z"}`, nil, false},
	{"relative date year 0", relative("before_last", "3d"), `{"t":"0000-01-01"}`, nil, false},
	{"relative date year 1 ahead of UTC", relative("before_last", "3d"), `{"t":"0001-01-01T00:00:00+01:00"}`, nil, true},
	{"relative date non-ASCII digits", relative("before_last", "3d"), `{"t":"２０２６-01-01"}`, nil, false},
	{"relative date and plan", `{"type":"composite","operator":"and","conditions":[` + relative("within_next", "3d") + `,{"type":"property","property":"plan","operator":"eq","value":"trial"}]}`,
		`{"t":"2026-11-30","plan":"trial"}`, nil, true},
}

// anchored joins a leaf that alone would be rejected as unbounded with a
// bounded one that holds for the case's contact (property anchor).
// held is a membership row a case's user has: of a bucket, active or
// left, deleted or not.
type held struct {
	bucket  string
	status  string
	deleted bool
}

// legCase is a conformance case with membership rows, for bucket legs
// (contract §13). Criteria may read the buckets x and y.
type legCase struct {
	richCase
	held []held
}

// bucket is the bucket leg of id with the check.
func bucket(id, check string) string {
	return fmt.Sprintf(`{"type":"bucket","bucketId":%q,"check":%q}`, id, check)
}

var legCases = []legCase{
	{richCase{"member, active row", bucket("x", "member"), `{}`, nil, true}, []held{{"x", db.StatusActive, false}}},
	{richCase{"member, no row", bucket("x", "member"), `{}`, nil, false}, nil},
	{richCase{"member, no contact", bucket("x", "member"), ``, nil, true}, []held{{"x", db.StatusActive, false}}},
	{richCase{"member, only a left row", bucket("x", "member"), `{}`, nil, false}, []held{{"x", db.StatusLeft, false}}},
	{richCase{"member, active row deleted", bucket("x", "member"), `{}`, nil, false}, []held{{"x", db.StatusActive, true}}},
	{richCase{"member, a row of another bucket", bucket("x", "member"), `{}`, nil, false}, []held{{"y", db.StatusActive, false}}},
	{richCase{"member, left then active again", bucket("x", "member"), `{}`, nil, true},
		[]held{{"x", db.StatusLeft, false}, {"x", db.StatusActive, false}}},
	{richCase{"not_member, no row", anchored(bucket("y", "not_member")), `{"anchor":1}`, nil, true}, nil},
	{richCase{"not_member, active row", anchored(bucket("y", "not_member")), `{"anchor":1}`, nil, false}, []held{{"y", db.StatusActive, false}}},
	{richCase{"not_member, left row", anchored(bucket("y", "not_member")), `{"anchor":1}`, nil, true}, []held{{"y", db.StatusLeft, false}}},
	{richCase{"not_member, deleted active row", anchored(bucket("y", "not_member")), `{"anchor":1}`, nil, true}, []held{{"y", db.StatusActive, true}}},
	{richCase{"member and not_member", `{"type":"composite","operator":"and","conditions":[` + bucket("x", "member") + `,` + bucket("y", "not_member") + `]}`,
		`{}`, nil, true}, []held{{"x", db.StatusActive, false}}},
	{richCase{"member and not_member, in both", `{"type":"composite","operator":"and","conditions":[` + bucket("x", "member") + `,` + bucket("y", "not_member") + `]}`,
		`{}`, nil, false}, []held{{"x", db.StatusActive, false}, {"y", db.StatusActive, false}}},
	{richCase{"member or an event", `{"type":"composite","operator":"or","conditions":[` + bucket("x", "member") + `,{"type":"event","eventName":"a","check":"exists"}]}`,
		`{}`, []fired{{"a", day, ""}}, true}, nil},
	{richCase{"member or an event, neither", `{"type":"composite","operator":"or","conditions":[` + bucket("x", "member") + `,{"type":"event","eventName":"a","check":"exists"}]}`,
		`{}`, []fired{{"b", day, ""}}, false}, nil},
	{richCase{"member and a property", `{"type":"composite","operator":"and","conditions":[` + bucket("x", "member") + `,{"type":"property","property":"plan","operator":"eq","value":"pro"}]}`,
		`{"plan":"pro"}`, nil, true}, []held{{"x", db.StatusActive, false}}},
}

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

	cases := slices.Clone(legCases)
	for _, rc := range richCases {
		cases = append(cases, legCase{richCase: rc})
	}
	for _, tc := range conformanceCases {
		rc := richCase{name: tc.name, criteria: tc.criteria, props: tc.props, want: tc.want}
		for _, e := range tc.events {
			rc.events = append(rc.events, fired{event: e.event, ago: e.ago})
		}
		cases = append(cases, legCase{richCase: rc})
	}
	for i, tc := range cases {
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
				ev := buckets.Event{Name: e.event, OccurredAt: at}
				row := db.UserEvent{UserID: user, Event: e.event, OccurredAt: at}
				if e.props != "" {
					ev.Properties = buckets.DecodeProperties([]byte(e.props))
					row.Properties = json.RawMessage(e.props)
				}
				mem.Events = append(mem.Events, ev)
				rows = append(rows, row)
			}
			require.NoError(t, dbtest.InsertUserEvents(ctx, conn, rows))
			for k, h := range tc.held {
				m := db.Membership{UserID: user, BucketID: h.bucket, Status: h.status, EntryCount: k + 1,
					EnteredAt: conformanceNow.Add(-time.Duration(10-k) * day)}
				if h.status == db.StatusLeft {
					m.LeftAt = ptr(conformanceNow.Add(-time.Duration(9-k) * day))
				}
				if h.deleted {
					m.DeletedAt = ptr(conformanceNow)
				}
				require.NoError(t, dbtest.InsertMemberships(ctx, conn, []db.Membership{m}))
				if h.status == db.StatusActive && !h.deleted {
					stored, err := db.ListMemberships(ctx, conn, db.MembershipFilter{UserID: user, BucketID: h.bucket, Status: db.StatusActive})
					require.NoError(t, err)
					mem.Members = map[string]buckets.MembershipFact{h.bucket: {Member: true, RowID: stored[0].ID, EnteredAt: stored[0].EnteredAt}}
				}
			}

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

// TestConformanceCoversEveryOperator requires a conformance case of every
// operator, event check and comparison the loader accepts (see the
// checklist in buckets/operators.go): a new one is held to the Go
// evaluator only once the table has cases of it.
func TestConformanceCoversEveryOperator(t *testing.T) {
	t.Parallel()
	properties, checks, comparisons := map[buckets.PropertyOperator]bool{}, map[buckets.EventCheck]bool{}, map[buckets.CountOperator]bool{}
	bucketChecks := map[buckets.BucketCheck]bool{}
	criteria := make([]string, 0, len(conformanceCases)+len(richCases)+len(legCases))
	for _, tc := range conformanceCases {
		criteria = append(criteria, tc.criteria)
	}
	for _, tc := range richCases {
		criteria = append(criteria, tc.criteria)
	}
	for _, tc := range legCases {
		criteria = append(criteria, tc.criteria)
	}
	for _, text := range criteria {
		buckets.Walk(loadCriteria(t, text), func(_ string, c buckets.Condition) {
			switch c := c.(type) {
			case *buckets.PropertyCondition:
				properties[c.Operator] = true
			case *buckets.EventCondition:
				checks[c.Check], comparisons[c.Operator] = true, true
				for _, w := range c.Where {
					properties[w.Operator] = true
				}
			case *buckets.BucketCondition:
				bucketChecks[c.Check] = true
			}
		})
	}
	for _, check := range buckets.BucketChecks() {
		require.True(t, bucketChecks[check], "no conformance case of the bucket check %s", check)
	}
	for _, op := range buckets.PropertyOperators() {
		require.True(t, properties[op], "no conformance case of the property operator %s", op)
	}
	for _, check := range buckets.EventChecks() {
		require.True(t, checks[check], "no conformance case of the event check %s", check)
	}
	for _, op := range buckets.Comparisons() {
		require.True(t, comparisons[op], "no conformance case of the comparison %s", op)
	}
}

// loadCriteria loads the criteria as a bucket's, beside the buckets x and
// y that bucket legs read.
func loadCriteria(t *testing.T, criteria string) buckets.Condition {
	t.Helper()
	bs, report := buckets.Load(fstest.MapFS{
		"buckets/b.json": {Data: []byte(`{"id":"b","name":"B","criteria":` + criteria + `}`)},
		"buckets/x.json": {Data: []byte(`{"id":"x","name":"X","criteria":{"type":"property","property":"plan","operator":"exists"}}`)},
		"buckets/y.json": {Data: []byte(`{"id":"y","name":"Y","criteria":{"type":"property","property":"plan","operator":"exists"}}`)},
	})
	require.NoError(t, report.Err())
	for _, b := range bs {
		if b.ID == "b" {
			return b.Criteria
		}
	}
	t.Fatalf("no bucket b")
	return nil
}

func ptr[T any](v T) *T { return &v }

// requireTraceConsistent checks that each traced leaf's result is what its
// condition gives for the value or count it observed.
func requireTraceConsistent(t *testing.T, trace buckets.Trace) {
	t.Helper()
	require.NotEmpty(t, trace.Leaves)
	for _, l := range trace.Leaves {
		switch c := l.Condition.(type) {
		case *buckets.PropertyCondition:
			require.Equal(t, c.Holds(l.Value, l.Present, conformanceNow), l.Result, "leaf %s", l.Path)
		case *buckets.EventCondition:
			require.Equal(t, c.HoldsFor(l.Tally), l.Result, "leaf %s", l.Path)
			require.LessOrEqual(t, l.Tally.Count, l.Tally.InWindow, "leaf %s", l.Path)
			require.Equal(t, c.Cutoff(conformanceNow), l.Cutoff, "leaf %s", l.Path)
		case *buckets.BucketCondition:
			require.Equal(t, c.HoldsFor(l.Membership), l.Result, "leaf %s", l.Path)
			require.Equal(t, l.Membership.Member, l.Membership.RowID != "", "leaf %s: a member's row is observed", l.Path)
		}
	}
}
