package db

import (
	"fmt"
	"strings"
	"time"

	"github.com/bucketworker/bucket-worker/buckets"
)

// Predicate is a compiled criteria tree: an SQL boolean expression with ?
// placeholders and their arguments, ready for bun's Where.
type Predicate struct {
	SQL  string
	Args []any
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
	return Predicate{SQL: text, Args: comp.args}
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
	return Predicate{SQL: text, Args: comp.args}
}

type compiler struct {
	now     time.Time
	subject Subject
	args    []any
	// negate compiles the negation of the condition instead.
	negate bool
}

func (c *compiler) arg(v any) string {
	c.args = append(c.args, v)
	return "?"
}

func (c *compiler) condition(cond buckets.Condition) string {
	switch cond := cond.(type) {
	case *buckets.PropertyCondition:
		if c.negate {
			return "NOT (" + c.property(cond) + ")"
		}
		return c.property(cond)
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

// property compiles a property leg. Comparisons follow JSON types: strings
// and booleans by jsonb equality, which is type-strict; numbers as doubles
// (bucket_worker_double, contract §3.1), so 5.0000000000000001 = 5 as in
// Go and JavaScript. Ordering and contains apply only to numbers and
// strings, and a leg on any other type is false, never NULL.
func (c *compiler) property(p *buckets.PropertyCondition) string {
	props := c.subject.Properties
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
		cast := "text"
		if _, isBool := p.Value.(bool); isBool {
			cast = "boolean"
		}
		return fmt.Sprintf("coalesce((%s -> %s) = to_jsonb(%s::%s), false)", props, key(), c.arg(p.Value), cast)
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
	}
	panic(fmt.Sprintf("db: unknown property operator %q", p.Operator))
}

// event compiles an event leg as a correlated subquery on user_events,
// which the (user_id, event, occurred_at) index answers.
func (c *compiler) event(e *buckets.EventCondition) string {
	where := fmt.Sprintf("e.user_id = %s AND e.event = %s", c.subject.UserID, c.arg(e.EventName))
	if cutoff := e.Cutoff(c.now); !cutoff.IsZero() {
		where += " AND e.occurred_at >= " + c.arg(cutoff)
	}
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

var (
	countOperators = map[buckets.CountOperator]string{
		buckets.CountGt: ">", buckets.CountGte: ">=", buckets.CountLt: "<", buckets.CountLte: "<=", buckets.CountEq: "=",
	}
	negatedCountOperators = map[buckets.CountOperator]string{
		buckets.CountGt: "<=", buckets.CountGte: "<", buckets.CountLt: ">=", buckets.CountLte: ">", buckets.CountEq: "<>",
	}
)
