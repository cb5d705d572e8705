package db

import (
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
	case *buckets.BucketCondition:
		compile, ok := bucketCompilers[cond.Check]
		if !ok {
			panic(fmt.Sprintf("db: unknown bucket check %q", cond.Check))
		}
		return compile(c, cond)
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
	compile, ok := propertyCompilers[p.Operator]
	if !ok {
		panic(fmt.Sprintf("db: unknown property operator %q", p.Operator))
	}
	return compile(c, p, props)
}

// propertyCompilers is the compile layer of the property operators (see
// the checklist in buckets/operators.go): the SQL of a leg over the
// properties document props.
var propertyCompilers = map[buckets.PropertyOperator]func(c *compiler, p *buckets.PropertyCondition, props string) string{
	buckets.PropEq: (*compiler).equal,
	buckets.PropNeq: func(c *compiler, p *buckets.PropertyCondition, props string) string {
		return "NOT " + c.equal(p, props)
	},
	buckets.PropGt:  numberComparison(buckets.CountGt),
	buckets.PropGte: numberComparison(buckets.CountGte),
	buckets.PropLt:  numberComparison(buckets.CountLt),
	buckets.PropLte: numberComparison(buckets.CountLte),
	buckets.PropContains: func(c *compiler, p *buckets.PropertyCondition, props string) string {
		return fmt.Sprintf("CASE WHEN jsonb_typeof(%s -> %s) = 'string' THEN strpos(%s ->> %s, %s) > 0 ELSE false END",
			props, c.arg(p.Property), props, c.arg(p.Property), c.arg(p.Value))
	},
	buckets.PropExists: (*compiler).exists,
	buckets.PropNotExists: func(c *compiler, p *buckets.PropertyCondition, props string) string {
		return "NOT " + c.exists(p, props)
	},
	buckets.PropWithinLast: (*compiler).relativeDate,
	buckets.PropBeforeLast: (*compiler).relativeDate,
	buckets.PropWithinNext: (*compiler).relativeDate,
	buckets.PropAfterNext:  (*compiler).relativeDate,
}

// exists is true when the key is present and not JSON null.
func (c *compiler) exists(p *buckets.PropertyCondition, props string) string {
	return fmt.Sprintf("coalesce(jsonb_typeof(%s -> %s) <> 'null', false)", props, c.arg(p.Property))
}

// equal compares the value JSON-type-strict: a number as a double; a
// string or a bool by the property's text, then, only where the text
// matched, by its JSON type. jsonb equality, (props -> key) = '"v"'::jsonb,
// walks both documents: filtering a million contacts by it cost 127 ms
// above the scan, against 47 for this (docs/performance.md, *Reading a
// property*).
func (c *compiler) equal(p *buckets.PropertyCondition, props string) string {
	var text, jsonType string
	switch v := p.Value.(type) {
	case float64:
		return numberComparison(buckets.CountEq)(c, p, props)
	case string:
		text, jsonType = v, "string"
	case bool:
		text, jsonType = strconv.FormatBool(v), "boolean"
	default:
		panic(fmt.Sprintf("db: property value %v of type %T", p.Value, p.Value))
	}
	return fmt.Sprintf("coalesce(%s ->> %s = %s AND jsonb_typeof(%s -> %s) = '%s', false)",
		props, c.arg(p.Property), c.arg(text), props, c.arg(p.Property), jsonType)
}

// numberComparison compares the property, read as a double, with the
// value as op says; a property that is no number makes it false.
func numberComparison(op buckets.CountOperator) func(c *compiler, p *buckets.PropertyCondition, props string) string {
	return func(c *compiler, p *buckets.PropertyCondition, props string) string {
		return fmt.Sprintf("coalesce(bucket_worker_double(%s -> %s) %s %s::float8, false)",
			props, c.arg(p.Property), comparisonSQL[op].op, c.arg(p.Value))
	}
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
	compile, ok := eventCompilers[e.Check]
	if !ok {
		panic(fmt.Sprintf("db: unknown event check %q", e.Check))
	}
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
	return compile(c, e, eventRows{where: where, args: rows.args})
}

// CompileQuietSince is when the subject went quiet by an absence leg (not_exists
// within W): its last event of the leg — of its name, passing its where,
// at any time — plus W; NULL for a subject without one. It dates the
// beginning of a backfilled absence membership (contract §14).
func CompileQuietSince(e *buckets.EventCondition, s Subject) Predicate {
	c := &compiler{subject: s}
	where := fmt.Sprintf("e.user_id = %s AND e.event = %s", s.UserID, c.arg(e.EventName))
	for _, w := range e.Where {
		where += " AND " + c.property(w, "e.properties")
	}
	window := c.arg(int64(e.Within.Std() / time.Second))
	return Predicate{SQL: fmt.Sprintf("((SELECT max(e.occurred_at) FROM user_events AS e WHERE %s) + %s * interval '1 second')", where, window), Args: c.args}
}

// eventRows is the filter of the events a leg reads: the user's events of
// its name, in its window, passing its where.
type eventRows struct {
	where string
	args  []any
}

// eventCompilers is the compile layer of the event checks (see the
// checklist in buckets/operators.go): the SQL of a leg over its events.
var eventCompilers = map[buckets.EventCheck]func(c *compiler, e *buckets.EventCondition, rows eventRows) string{
	buckets.CheckExists:    (*compiler).presence,
	buckets.CheckNotExists: (*compiler).presence,
	buckets.CheckCount:     (*compiler).count,
	buckets.CheckSum: aggregate("coalesce(sum(x::text::numeric), 0) AS s", func(c *compiler, e *buckets.EventCondition, op string) string {
		return fmt.Sprintf("s <> 'NaN' AND s %s %s::numeric", op, c.arg(numericText(e.Threshold)))
	}),
	buckets.CheckAvg: aggregate("sum(x::text::numeric) AS s, count(x) AS n", func(c *compiler, e *buckets.EventCondition, op string) string {
		return fmt.Sprintf("s <> 'NaN' AND s %s %s::numeric * n", op, c.arg(numericText(e.Threshold)))
	}),
	buckets.CheckMin: aggregate("min(x) AS s", extremeTest),
	buckets.CheckMax: aggregate("max(x) AS s", extremeTest),
}

// presence is an exists or not_exists leg, and a count without
// comparison: an EXISTS, negated as the check and the compiler's own
// negation say, so that an absence leg's SHOULD-LEAVE test is a plain
// EXISTS the planner can turn into a semi-join.
func (c *compiler) presence(e *buckets.EventCondition, rows eventRows) string {
	c.args = append(c.args, rows.args...)
	exists := "EXISTS (SELECT 1 FROM user_events AS e WHERE " + rows.where + ")"
	if (e.Check == buckets.CheckNotExists) != c.negate {
		return "NOT " + exists
	}
	return exists
}

// count compares the number of the leg's events.
func (c *compiler) count(e *buckets.EventCondition, rows eventRows) string {
	if e.Operator == buckets.CountAny {
		return c.presence(e, rows)
	}
	c.args = append(c.args, rows.args...)
	op := comparisonSQL[e.Operator].op
	if c.negate {
		op = comparisonSQL[e.Operator].negated
	}
	return fmt.Sprintf("(SELECT count(*) FROM user_events AS e WHERE %s) %s %s", rows.where, op, c.arg(e.Value))
}

// aggregate compiles sum, avg, min and max over the leg's events: agg
// computes s (and n) over the events' values x, test compares them with
// the threshold. Sums and averages add each value's shortest decimal
// (float8 printed, as buckets does) exactly as numerics and compare
// exactly, infinities included; a sum of both infinities is NaN and false.
// min and max compare doubles. With no value, sum is 0 and the others are
// false.
func aggregate(agg string, test func(c *compiler, e *buckets.EventCondition, op string) string) func(c *compiler, e *buckets.EventCondition, rows eventRows) string {
	return func(c *compiler, e *buckets.EventCondition, rows eventRows) string {
		cmp := test(c, e, comparisonSQL[e.Operator].op)
		values := fmt.Sprintf("SELECT bucket_worker_double(e.properties -> %s) AS x FROM user_events AS e WHERE %s", c.arg(e.Property), rows.where)
		c.args = append(c.args, rows.args...)
		sql := fmt.Sprintf("coalesce((SELECT %s FROM (SELECT %s FROM (%s) AS v) AS a), false)", cmp, agg, values)
		if c.negate {
			return "NOT " + sql
		}
		return sql
	}
}

// extremeTest compares a min or a max as a double.
func extremeTest(c *compiler, e *buckets.EventCondition, op string) string {
	return fmt.Sprintf("s %s %s::float8", op, c.arg(e.Threshold))
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

// bucketCompilers is the compile layer of the bucket checks (see the
// checklist in buckets/operators.go): the user's active, undeleted
// membership of the bucket, which the (user_id, bucket_id) index of
// active rows answers (contract §13).
var bucketCompilers = map[buckets.BucketCheck]func(c *compiler, b *buckets.BucketCondition) string{
	buckets.CheckMember:    (*compiler).membership,
	buckets.CheckNotMember: (*compiler).membership,
}

// membership is an EXISTS on the user's active row of the bucket, negated
// as the check and the compiler's own negation say.
func (c *compiler) membership(b *buckets.BucketCondition) string {
	exists := fmt.Sprintf("EXISTS (SELECT 1 FROM bucket_memberships AS bm WHERE bm.user_id = %s AND bm.bucket_id = %s "+
		"AND bm.status = 'active' AND bm.deleted_at IS NULL)", c.subject.UserID, c.arg(b.BucketID))
	if (b.Check == buckets.CheckNotMember) != c.negate {
		return "NOT " + exists
	}
	return exists
}

// comparisonSQL is the compile layer of the comparisons (see the
// checklist in buckets/operators.go): the SQL operator, and the one of its
// negation.
var comparisonSQL = map[buckets.CountOperator]struct{ op, negated string }{
	buckets.CountGt:  {">", "<="},
	buckets.CountGte: {">=", "<"},
	buckets.CountLt:  {"<", ">="},
	buckets.CountLte: {"<=", ">"},
	buckets.CountEq:  {"=", "<>"},
}
