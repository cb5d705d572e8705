package db

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/bucketworker/bucket-worker/buckets"
)

// Predicate is a compiled criteria tree: an SQL boolean expression with ?
// placeholders and their arguments, ready for bun's Where.
type Predicate struct {
	SQL  string
	Args []any
	// ReadsProperties is true when the predicate reads the subject's
	// properties: the criteria have a property leg.
	ReadsProperties bool
}

// Subject names the SQL expressions a predicate is evaluated over: the
// user key and the contact's properties (NULL for a user without a live
// contact, which reads as no properties).
type Subject struct {
	UserID     string // such as "m.user_id"
	Properties string // such as "c.properties"
}

// CompileCriteria turns criteria into an SQL predicate with the meaning
// buckets.Evaluate gives them at the instant now. The conformance suite
// holds the two to the same answers.
func CompileCriteria(c buckets.Condition, now time.Time, s Subject) Predicate {
	comp := &compiler{now: now, subject: s}
	text := comp.condition(c)
	return Predicate{SQL: text, Args: comp.args, ReadsProperties: comp.readsProperties}
}

// CompileNegation is the predicate "the criteria do not hold", with the
// negation pushed down to the leaves (De Morgan; exists ↔ not_exists; a
// count's operator inverted), so that an absence leg's SHOULD-LEAVE test
// is a plain EXISTS the planner can turn into a semi-join. Every compiled
// leaf is true or false, never NULL, so this is exactly NOT of
// CompileCriteria.
func CompileNegation(c buckets.Condition, now time.Time, s Subject) Predicate {
	comp := &compiler{now: now, subject: s, negate: true}
	text := comp.condition(c)
	return Predicate{SQL: text, Args: comp.args, ReadsProperties: comp.readsProperties}
}

type compiler struct {
	now     time.Time
	subject Subject
	args    []any
	// negate compiles the negation of the condition instead.
	negate bool
	// readsProperties records that a property leg read the subject's
	// properties.
	readsProperties bool
}

func (c *compiler) arg(v any) string {
	c.args = append(c.args, v)
	return "?"
}

func (c *compiler) condition(cond buckets.Condition) string {
	switch cond := cond.(type) {
	case *buckets.PropertyCondition:
		c.readsProperties = true
		if c.negate {
			return "NOT (" + c.property(cond, c.subject.Properties) + ")"
		}
		return c.property(cond, c.subject.Properties)
	case *buckets.EventCondition:
		return c.event(cond)
	case *buckets.Composite:
		parts := make([]string, len(cond.Conditions))
		for i, child := range cond.Conditions {
			parts[i] = c.condition(child)
		}
		joiner := " AND "
		if (cond.Operator == buckets.Or) != c.negate {
			joiner = " OR "
		}
		return "(" + strings.Join(parts, joiner) + ")"
	}
	panic(fmt.Sprintf("db: unknown condition type %T", cond))
}

// property compiles a property leg over the properties document props.
// Comparisons follow JSON types: strings and booleans by jsonb equality,
// which is type-strict; numbers as doubles (bucket_worker_double, contract
// §3.1), so 5.0000000000000001 = 5 as in Go and JavaScript. Ordering and
// contains apply only to numbers and strings, and a leg on any other type
// is false, never NULL.
func (c *compiler) property(p *buckets.PropertyCondition, props string) string {
	key := func() string { return c.arg(p.Property) }
	exists := func() string {
		return fmt.Sprintf("coalesce(jsonb_typeof(%s -> %s) <> 'null', false)", props, key())
	}
	compare := func(op string) string {
		return fmt.Sprintf("coalesce(bucket_worker_double(%s -> %s) %s %s::float8, false)", props, key(), op, c.arg(p.Value))
	}
	equal := func() string {
		if _, number := p.Value.(float64); number {
			return compare("=")
		}
		// The value as a jsonb constant, folded once; to_jsonb(?) is
		// evaluated per row, which doubled a scan of a million contacts.
		doc, err := json.Marshal(p.Value)
		if err != nil {
			panic(fmt.Sprintf("db: property value %v: %v", p.Value, err)) // a string or a bool
		}
		return fmt.Sprintf("coalesce((%s -> %s) = %s::jsonb, false)", props, key(), c.arg(string(doc)))
	}
	switch p.Operator {
	case buckets.PropExists:
		return exists()
	case buckets.PropNotExists:
		return "NOT " + exists()
	case buckets.PropEq:
		return equal()
	case buckets.PropNeq:
		return "NOT " + equal()
	case buckets.PropGt, buckets.PropGte, buckets.PropLt, buckets.PropLte:
		return compare(map[buckets.PropertyOperator]string{buckets.PropGt: ">", buckets.PropGte: ">=", buckets.PropLt: "<", buckets.PropLte: "<="}[p.Operator])
	case buckets.PropContains:
		return fmt.Sprintf("CASE WHEN jsonb_typeof(%s -> %s) = 'string' THEN strpos(%s ->> %s, %s) > 0 ELSE false END",
			props, key(), props, key(), c.arg(p.Value))
	case buckets.PropWithinLast, buckets.PropBeforeLast, buckets.PropWithinNext, buckets.PropAfterNext:
		return c.relativeDate(p, props)
	}
	panic(fmt.Sprintf("db: unknown property operator %q", p.Operator))
}

// relativeDate compiles a relative-date leg (contract §3.6): the property
// read as a time by bucket_worker_time, in the leg's window at now. It is
// led by a necessary test on the text's leading date, cheap enough that
// the planner runs it first: whatever its offset, a time in the window is
// written with a date at most a day outside the window's dates.
func (c *compiler) relativeDate(p *buckets.PropertyCondition, props string) string {
	from, to := p.DateWindow(c.now)
	written := func(op string, date time.Time) string {
		return fmt.Sprintf("left(%s ->> %s, 10) COLLATE \"C\" %s %s", props, c.arg(p.Property), op, c.arg(writtenDate(date)))
	}
	exact := func(op string, t time.Time) string {
		return fmt.Sprintf("bucket_worker_time(%s -> %s) %s %s", props, c.arg(p.Property), op, c.arg(t))
	}
	var parts []string
	if !from.IsZero() {
		parts = append(parts, written(">=", from.AddDate(0, 0, -1)))
	}
	if !to.IsZero() {
		parts = append(parts, written("<=", to.AddDate(0, 0, 1)))
	}
	switch p.Operator {
	case buckets.PropWithinLast, buckets.PropWithinNext:
		// One call for both bounds: from <= t AND t <= to would read t twice.
		parts = append(parts, fmt.Sprintf("tstzrange(%s, %s, '[]') @> bucket_worker_time(%s -> %s)", c.arg(from), c.arg(to), props, c.arg(p.Property)))
	case buckets.PropBeforeLast:
		parts = append(parts, exact("<", to))
	case buckets.PropAfterNext:
		parts = append(parts, exact(">", from))
	}
	return "coalesce(" + strings.Join(parts, " AND ") + ", false)"
}

// compileDateExpiry is the earliest time at which one of the
// relative-date legs stops holding for the properties props, when nothing
// changes (buckets.PropertyCondition.DateExpiry): NULL when none does.
func compileDateExpiry(legs []*buckets.PropertyCondition, props string) Predicate {
	c := &compiler{}
	ends := make([]string, 0, len(legs))
	for _, p := range legs {
		end := fmt.Sprintf("bucket_worker_time(%s -> %s)", props, c.arg(p.Property))
		if p.Operator == buckets.PropWithinLast {
			end = fmt.Sprintf("(%s + %s::interval)", end, c.arg(fmt.Sprintf("%d seconds", int64(p.Span.Std()/time.Second))))
		}
		ends = append(ends, end)
	}
	return Predicate{SQL: "LEAST(" + strings.Join(ends, ", ") + ")", Args: c.args}
}

// writtenDate is the date of t as a relative-date property writes it,
// clamped to the years it can write.
func writtenDate(t time.Time) string {
	switch {
	case t.Year() < 1:
		return "0000-00-00"
	case t.Year() > 9999:
		return "9999-99-99"
	}
	return t.UTC().Format("2006-01-02")
}

// event compiles an event leg as a correlated subquery on user_events,
// which the (user_id, event, occurred_at) index answers; a where filters
// the rows, an aggregate reads its property of those (contract §3.5).
func (c *compiler) event(e *buckets.EventCondition) string {
	// The rows' filter is compiled apart: an aggregate writes it after
	// arguments of its own.
	rows := &compiler{now: c.now, subject: c.subject}
	where := fmt.Sprintf("e.user_id = %s AND e.event = %s", c.subject.UserID, rows.arg(e.EventName))
	if cutoff := e.Cutoff(c.now); !cutoff.IsZero() {
		where += " AND e.occurred_at >= " + rows.arg(cutoff)
	}
	for _, w := range e.Where {
		where += " AND " + rows.property(w, "e.properties")
	}
	if e.Check.IsAggregate() {
		return c.aggregate(e, where, rows.args)
	}
	c.args = append(c.args, rows.args...)
	exists := "EXISTS (SELECT 1 FROM user_events AS e WHERE " + where + ")"
	positive := e.Check == buckets.CheckExists || e.Check == buckets.CheckCount && e.Operator == buckets.CountAny
	switch {
	case positive && !c.negate, e.Check == buckets.CheckNotExists && c.negate:
		return exists
	case positive, e.Check == buckets.CheckNotExists:
		return "NOT " + exists
	}
	op := countOperators[e.Operator]
	if c.negate {
		op = negatedCountOperators[e.Operator]
	}
	return fmt.Sprintf("(SELECT count(*) FROM user_events AS e WHERE %s) %s %s", where, op, c.arg(e.Value))
}

// aggregate compiles sum, avg, min and max over the events of where. Sums
// and averages add each value's shortest decimal (float8 printed, as
// buckets does) exactly as numerics and compare exactly, infinities
// included; a sum of both infinities is NaN and false. min and max compare
// doubles. With no value, sum is 0 and the others are false.
func (c *compiler) aggregate(e *buckets.EventCondition, where string, whereArgs []any) string {
	var agg, test string
	op := countOperators[e.Operator]
	switch e.Check {
	case buckets.CheckSum:
		agg = "coalesce(sum(x::text::numeric), 0) AS s"
		test = fmt.Sprintf("s <> 'NaN' AND s %s %s::numeric", op, c.arg(numericText(e.Threshold)))
	case buckets.CheckAvg:
		agg = "sum(x::text::numeric) AS s, count(x) AS n"
		test = fmt.Sprintf("s <> 'NaN' AND s %s %s::numeric * n", op, c.arg(numericText(e.Threshold)))
	case buckets.CheckMin, buckets.CheckMax:
		agg = fmt.Sprintf("%s(x) AS s", e.Check)
		test = fmt.Sprintf("s %s %s::float8", op, c.arg(e.Threshold))
	}
	values := fmt.Sprintf("SELECT bucket_worker_double(e.properties -> %s) AS x FROM user_events AS e WHERE %s", c.arg(e.Property), where)
	c.args = append(c.args, whereArgs...)
	sql := fmt.Sprintf("coalesce((SELECT %s FROM (SELECT %s FROM (%s) AS v) AS a), false)", test, agg, values)
	if c.negate {
		return "NOT " + sql
	}
	return sql
}

// numericText writes a double as the numeric the compiler compares sums
// with: its shortest decimal, or an infinity.
func numericText(f float64) string {
	switch {
	case math.IsInf(f, 1):
		return "Infinity"
	case math.IsInf(f, -1):
		return "-Infinity"
	}
	return strconv.FormatFloat(f, 'g', -1, 64)
}

var (
	countOperators = map[buckets.CountOperator]string{
		buckets.CountGt: ">", buckets.CountGte: ">=", buckets.CountLt: "<", buckets.CountLte: "<=", buckets.CountEq: "=",
	}
	negatedCountOperators = map[buckets.CountOperator]string{
		buckets.CountGt: "<=", buckets.CountGte: "<", buckets.CountLt: ">=", buckets.CountLte: ">", buckets.CountEq: "<>",
	}
)
