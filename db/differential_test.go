package db_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun/dialect/pgdialect"

	"github.com/bucketworker/bucket-worker/buckets"
	"github.com/bucketworker/bucket-worker/db"
	"github.com/bucketworker/bucket-worker/db/dbtest"
)

// TestDifferential holds the Go evaluator and the SQL compiler together
// on generated criteria and users, beside the fixed conformance table: for
// every criteria tree and every user, CompileCriteria must say what
// buckets.Evaluate says, and CompileNegation the opposite. Values sit where
// the two could part: numbers at the edges of the double range and of
// integer precision, absent, null and mistyped properties, users without a
// contact, events exactly at a window's cutoff and a microsecond either
// side. DIFFERENTIAL_SEED picks another seed, DIFFERENTIAL_CASES more cases.
func TestDifferential(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	conn, _ := dbtest.New(t)
	seed := envInt(t, "DIFFERENTIAL_SEED", 20261201)
	cases := envInt(t, "DIFFERENTIAL_CASES", 600)
	g := &generator{rng: rand.New(rand.NewPCG(uint64(seed), 1))}

	const userCount = 120
	users := make([]generatedUser, userCount)
	ids := make([]string, userCount)
	for i := range users {
		users[i] = g.user(fmt.Sprintf("diff-%03d", i))
		ids[i] = users[i].id
		if users[i].props != "" {
			require.NoError(t, dbtest.InsertContact(ctx, conn, &db.Contact{ExternalID: &users[i].id, Properties: []byte(users[i].props)}))
		}
		var rows []db.UserEvent
		for j, e := range users[i].facts.Events {
			rows = append(rows, db.UserEvent{UserID: users[i].id, Event: e.Name, OccurredAt: e.OccurredAt, Properties: users[i].eventProps[j]})
		}
		require.NoError(t, dbtest.InsertUserEvents(ctx, conn, rows))
		require.NoError(t, dbtest.InsertMemberships(ctx, conn, users[i].memberships))
		for _, m := range users[i].memberships {
			if m.Status == db.StatusActive && m.DeletedAt == nil {
				stored, err := db.ListMemberships(ctx, conn, db.MembershipFilter{UserID: m.UserID, BucketID: m.BucketID, Status: db.StatusActive})
				require.NoError(t, err)
				users[i].facts.Members[m.BucketID] = buckets.MembershipFact{Member: true, RowID: stored[0].ID, EnteredAt: stored[0].EnteredAt}
			}
		}
	}

	sqlVerdicts := func(p db.Predicate) map[string]bool {
		var rows []struct {
			UserID string `bun:"user_id"`
			Holds  bool   `bun:"holds"`
		}
		err := conn.NewSelect().
			TableExpr("unnest(?::text[]) AS u(user_id)", pgdialect.Array(ids)).
			Join("LEFT JOIN contacts AS c ON c.external_id = u.user_id AND c.deleted_at IS NULL").
			ColumnExpr("u.user_id").
			ColumnExpr(p.SQL+" AS holds", p.Args...).
			Scan(ctx, &rows)
		require.NoError(t, err, "SQL: %s", p.SQL)
		out := make(map[string]bool, len(rows))
		for _, r := range rows {
			out[r.UserID] = r.Holds
		}
		return out
	}

	subject := db.Subject{UserID: "u.user_id", Properties: "c.properties"}
	compared := 0
	for n := range cases {
		criteria := g.condition(0)
		holds := sqlVerdicts(db.CompileCriteria(criteria, conformanceNow, subject))
		fails := sqlVerdicts(db.CompileNegation(criteria, conformanceNow, subject))
		for i, u := range users {
			want, err := buckets.Evaluate(ctx, criteria, conformanceNow, u.facts)
			require.NoError(t, err)
			explained, _, err := buckets.Explain(ctx, criteria, conformanceNow, u.facts)
			require.NoError(t, err)
			require.Equal(t, want, explained, "explain's verdict is the evaluator's")
			where := fmt.Sprintf("case %d (seed %d): %s\nuser %s: properties %s, events %s, memberships %v",
				n, seed, buckets.String(criteria), u.id, u.props, u.describeEvents(), u.facts.Members)
			require.Equal(t, want, holds[u.id], "SQL compiler disagrees with the Go evaluator\n%s", where)
			require.Equal(t, !want, fails[u.id], "compiled negation is not the negation\n%s", where)
			if i%40 == n%40 { // the Go evaluator over the database, for a sample
				overDB, err := buckets.Evaluate(ctx, criteria, conformanceNow, db.UserFacts{IDB: conn, UserID: u.id, Properties: u.facts.Properties})
				require.NoError(t, err)
				require.Equal(t, want, overDB, "Go evaluator over the database\n%s", where)
			}
			compared++
		}
	}
	t.Logf("seed %d: %d criteria × %d users, %d verdicts compared", seed, cases, userCount, compared)
}

func envInt(t *testing.T, name string, def int) int {
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	require.NoError(t, err, name)
	return n
}

// generator draws criteria and users from small pools chosen to meet at
// the edges: property keys, event names and windows are shared, so legs
// and users collide often.
type generator struct{ rng *rand.Rand }

var (
	genKeys    = []string{"plan", "score", "n", "flag"}
	genEvents  = []string{"a", "b"}
	genWindows = []string{"", "", "1m", "1h", "1d", "7d", "30d"}
	// genNumbers are JSON number texts: integer precision, rounding, the
	// double range and beyond it, zero and its underflows.
	genNumbers = []string{"0", "-0", "1", "1.0", "2.5", "-2.5", "3", "0.1", "0.30000000000000004",
		"5", "5.0000000000000001", "9007199254740992", "9007199254740993", "1e308", "1.7976931348623157e308",
		"1.7976931348623158e308", "1e309", "-1e309", "2e400", "1e-400", "4e-324", "-1e308"}
	genStrings = []string{`""`, `"pro"`, `"trial"`, `"Pro"`, `"1"`, `"true"`, `"Zürich"`, `"a\"b"`}
	genOthers  = []string{"true", "false", "null", "{}", `{"plan":"pro"}`, "[]", "[1]"}
	// genTimes are relative-date values around the windows' bounds at
	// conformanceNow (2026-11-29T12:00:00.123456Z), and values that are no
	// time at all.
	genTimes = []string{`"2026-11-29T12:00:00.123456Z"`, `"2026-11-29T12:00:00.123455Z"`, `"2026-11-29T12:00:00.123457999Z"`,
		`"2026-11-30T12:00:00.123456Z"`, `"2026-11-28T12:00:00.123456Z"`, `"2026-12-02T12:00:00.123456Z"`, `"2026-12-06T12:00:00.123456Z"`,
		`"2026-11-22T12:00:00.123456Z"`, `"2026-12-29T12:00:00.123456Z"`, `"2026-10-30T12:00:00.123456Z"`, `"2026-12-01"`, `"2026-11-29"`,
		`"2026-11-30T01:00:00+13:00"`, `"2026-11-29T07:00:00-05:00"`, `"2026-11-27T23:00:00-14:00"`, `"2026-02-29"`, `"2026-12-01T00:00:00"`, `"soon"`, `"0000-01-01"`, "1764547200", "null"}
	genSpans = []string{"1m", "1h", "1d", "3d", "7d", "30d"}
	// genAges are event ages around the windows' cutoffs.
	genAges = []time.Duration{-time.Hour, 0, time.Second, time.Minute - time.Microsecond, time.Minute,
		time.Minute + time.Microsecond, time.Hour, 24 * time.Hour, 24*time.Hour + time.Microsecond,
		3 * 24 * time.Hour, 7 * 24 * time.Hour, 7*24*time.Hour + time.Microsecond, 30 * 24 * time.Hour, 400 * 24 * time.Hour}
)

func pick[T any](g *generator, items []T) T { return items[g.rng.IntN(len(items))] }

func (g *generator) condition(depth int) buckets.Condition {
	switch r := g.rng.IntN(10); {
	case depth < 3 && r < 3:
		c := &buckets.Composite{Operator: pick(g, []buckets.LogicOperator{buckets.And, buckets.Or})}
		for range 1 + g.rng.IntN(3) {
			c.Conditions = append(c.Conditions, g.condition(depth+1))
		}
		return c
	case r < 6:
		return g.property()
	case r < 8:
		return g.event()
	default:
		return &buckets.BucketCondition{BucketID: pick(g, genBuckets),
			Check: pick(g, []buckets.BucketCheck{buckets.CheckMember, buckets.CheckNotMember})}
	}
}

// genBuckets are the buckets bucket legs read; a user holds rows of them:
// active, left, deleted, or none.
var genBuckets = []string{"x", "y"}

func (g *generator) property() *buckets.PropertyCondition {
	if g.rng.IntN(5) == 0 {
		return &buckets.PropertyCondition{Property: "t", Span: buckets.MustDuration(pick(g, genSpans)),
			Operator: pick(g, []buckets.PropertyOperator{buckets.PropWithinLast, buckets.PropBeforeLast, buckets.PropWithinNext, buckets.PropAfterNext})}
	}
	return g.filter(genKeys)
}

// filter is a property condition of §3.1 on one of the keys.
func (g *generator) filter(keys []string) *buckets.PropertyCondition {
	p := &buckets.PropertyCondition{Property: pick(g, keys)}
	p.Operator = pick(g, []buckets.PropertyOperator{buckets.PropEq, buckets.PropNeq, buckets.PropGt, buckets.PropGte,
		buckets.PropLt, buckets.PropLte, buckets.PropContains, buckets.PropExists, buckets.PropNotExists})
	switch p.Operator {
	case buckets.PropExists, buckets.PropNotExists:
	case buckets.PropContains:
		p.Value = strings.Trim(pick(g, genStrings), `"`)
	case buckets.PropEq, buckets.PropNeq:
		switch g.rng.IntN(3) {
		case 0:
			p.Value = buckets.Double(pick(g, genNumbers))
		case 1:
			p.Value = strings.Trim(pick(g, genStrings), `"`)
		default:
			p.Value = g.rng.IntN(2) == 0
		}
	default:
		p.Value = buckets.Double(pick(g, genNumbers))
	}
	return p
}

func (g *generator) event() *buckets.EventCondition {
	e := &buckets.EventCondition{EventName: pick(g, genEvents)}
	e.Check = pick(g, []buckets.EventCheck{buckets.CheckExists, buckets.CheckNotExists, buckets.CheckCount,
		buckets.CheckCount, buckets.CheckSum, buckets.CheckAvg, buckets.CheckMin, buckets.CheckMax})
	if g.rng.IntN(3) == 0 {
		for range 1 + g.rng.IntN(2) {
			e.Where = append(e.Where, g.filter(genEventKeys))
		}
	}
	if e.Check.IsAggregate() {
		e.Property = pick(g, genEventKeys)
		e.Operator = pick(g, []buckets.CountOperator{buckets.CountGt, buckets.CountGte, buckets.CountLt, buckets.CountLte, buckets.CountEq})
		e.Threshold = buckets.Double(pick(g, genNumbers))
		if g.rng.IntN(2) == 0 {
			e.Threshold = buckets.Double(pick(g, genSums))
		}
	}
	if e.Check == buckets.CheckCount {
		e.Operator = pick(g, []buckets.CountOperator{buckets.CountAny, buckets.CountGt, buckets.CountGte,
			buckets.CountLt, buckets.CountLte, buckets.CountEq})
		if e.Operator != buckets.CountAny {
			e.Value = int64(g.rng.IntN(4))
		}
	}
	if w := pick(g, genWindows); w != "" {
		e.Within = buckets.MustDuration(w)
	}
	return e
}

// genEventKeys are the keys of events' properties, and genSums values
// that sums and averages of genNumbers reach.
var (
	genEventKeys = []string{"plan", "amount"}
	genSums      = []string{"0", "0.3", "0.6", "3.5", "5", "7.5", "10", "1.5", "1e309", "-1e309", "18014398509481984"}
)

type generatedUser struct {
	id    string
	props string // the contact's properties as stored; "" for no contact
	facts buckets.MemoryFacts
	// eventProps are the stored properties of facts.Events, nil for none.
	eventProps []json.RawMessage
	// memberships are the user's rows of the buckets of bucket legs.
	memberships []db.Membership
}

func (g *generator) user(id string) generatedUser {
	u := generatedUser{id: id, facts: buckets.MemoryFacts{Properties: buckets.Properties{}, Members: map[string]buckets.MembershipFact{}}}
	for _, b := range genBuckets {
		epoch := 0
		for range g.rng.IntN(3) { // left rows first, an active one last
			epoch++
			m := db.Membership{UserID: id, BucketID: b, Status: db.StatusLeft, EntryCount: epoch,
				EnteredAt: conformanceNow.Add(-time.Duration(10-epoch) * 24 * time.Hour)}
			m.LeftAt = ptr(m.EnteredAt.Add(time.Hour))
			u.memberships = append(u.memberships, m)
		}
		switch g.rng.IntN(4) {
		case 0, 1: // an active row
			epoch++
			u.memberships = append(u.memberships, db.Membership{UserID: id, BucketID: b, Status: db.StatusActive,
				EntryCount: epoch, EnteredAt: conformanceNow.Add(-time.Hour)})
		case 2: // an active row, erased
			epoch++
			u.memberships = append(u.memberships, db.Membership{UserID: id, BucketID: b, Status: db.StatusActive,
				EntryCount: epoch, EnteredAt: conformanceNow.Add(-time.Hour), DeletedAt: ptr(conformanceNow)})
		}
	}
	if g.rng.IntN(8) > 0 {
		var fields []string
		if g.rng.IntN(3) > 0 {
			fields = append(fields, `"t":`+pick(g, genTimes))
		}
		for _, k := range genKeys {
			var v string
			switch g.rng.IntN(5) {
			case 0:
				continue // absent
			case 1, 2:
				v = pick(g, genNumbers)
			case 3:
				v = pick(g, genStrings)
			default:
				v = pick(g, genOthers)
			}
			fields = append(fields, strconv.Quote(k)+":"+v)
		}
		u.props = "{" + strings.Join(fields, ",") + "}"
		u.facts.Properties = buckets.DecodeProperties([]byte(u.props))
	}
	for range g.rng.IntN(6) {
		e := buckets.Event{Name: pick(g, genEvents), OccurredAt: conformanceNow.Add(-pick(g, genAges))}
		var doc json.RawMessage
		if g.rng.IntN(4) > 0 {
			var fields []string
			if g.rng.IntN(3) > 0 {
				fields = append(fields, `"plan":`+pick(g, append([]string{`"pro"`, `"pro"`, `"basic"`}, genOthers...)))
			}
			if g.rng.IntN(4) > 0 {
				fields = append(fields, `"amount":`+pick(g, append([]string{"0.1", "0.2", "2.5", "5", "-2.5", `"5"`, "null"}, genNumbers...)))
			}
			doc = json.RawMessage("{" + strings.Join(fields, ",") + "}")
			e.Properties = buckets.DecodeProperties(doc)
		}
		u.facts.Events = append(u.facts.Events, e)
		u.eventProps = append(u.eventProps, doc)
	}
	return u
}

func (u generatedUser) describeEvents() string {
	parts := make([]string, len(u.facts.Events))
	for i, e := range u.facts.Events {
		parts[i] = fmt.Sprintf("%s@now-%s%s", e.Name, conformanceNow.Sub(e.OccurredAt), u.eventProps[i])
	}
	return "[" + strings.Join(parts, " ") + "]"
}
