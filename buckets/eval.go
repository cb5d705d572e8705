package buckets

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"strings"
	"time"
)

// Facts is what evaluation may know about one user: the contact's
// properties and the user's events.
type Facts interface {
	// Property returns the top-level contact property name and whether the
	// key is present at all (a present key may hold nil, JSON null).
	Property(name string) (value any, present bool)
	// CountEvents counts the user's events named name that occurred at or
	// after since; a zero since counts them all.
	CountEvents(ctx context.Context, name string, since time.Time) (int64, error)
	// EventProperties returns the properties of those events, one entry
	// per event (empty for an event without properties), for the legs that
	// filter or aggregate them.
	EventProperties(ctx context.Context, name string, since time.Time) ([]Properties, error)
	// Membership returns the user's active membership of the bucket, as
	// it is materialized (contract §13).
	Membership(ctx context.Context, bucketID string) (MembershipFact, error)
}

// MembershipFact is a user's membership of a bucket as a bucket leg reads
// it: whether there is an active, undeleted row, and which.
type MembershipFact struct {
	Member    bool
	RowID     string
	EnteredAt time.Time
}

// Evaluate reports whether the criteria hold for the user described by f at
// the instant now. Composites stop at the first child that decides them.
func Evaluate(ctx context.Context, c Condition, now time.Time, f Facts) (bool, error) {
	return evaluate(ctx, c, "criteria", now, f, nil)
}

// Trace is what an evaluation observed: every leaf of the criteria with
// the value it read, and every and/or with the children that decided it,
// in evaluation order (children before their composite).
type Trace struct {
	Leaves   []LeafTrace
	Branches []BranchTrace
}

// LeafTrace is one leaf of a traced evaluation.
type LeafTrace struct {
	// Path is where the leaf sits: criteria, criteria.conditions[1], …
	Path      string
	Condition Condition
	// Present and Value are what a property leg read: whether the key is
	// present, and its value (nil for JSON null).
	Present bool
	Value   any
	// Tally and Cutoff are what an event leg read: its events at or after
	// Cutoff (the zero time without a window).
	Tally  EventTally
	Cutoff time.Time
	// Membership is what a bucket leg read.
	Membership MembershipFact
	Result     bool
}

// BranchTrace is one and/or of a traced evaluation with its result and the
// children that decided it: for an and the false ones, for an or the true
// ones, or every child when none was decisive.
type BranchTrace struct {
	Path      string
	Operator  LogicOperator
	Result    bool
	DecidedBy []string
}

// Explain evaluates the criteria as Evaluate does, with the same answer,
// but visits every child of every composite and returns the trace of what
// it observed: the explanation of a verdict is the evaluation itself.
func Explain(ctx context.Context, c Condition, now time.Time, f Facts) (bool, Trace, error) {
	var t Trace
	holds, err := evaluate(ctx, c, "criteria", now, f, &t)
	return holds, t, err
}

// evaluate is the one evaluator: with trace nil it short-circuits, with a
// trace it visits and records every node.
func evaluate(ctx context.Context, c Condition, path string, now time.Time, f Facts, trace *Trace) (bool, error) {
	switch c := c.(type) {
	case *PropertyCondition:
		v, present := f.Property(c.Property)
		result := c.Holds(v, present, now)
		if trace != nil {
			trace.Leaves = append(trace.Leaves, LeafTrace{Path: path, Condition: c, Present: present, Value: v, Result: result})
		}
		return result, nil
	case *EventCondition:
		cutoff := c.Cutoff(now)
		tally, err := c.tally(ctx, f, cutoff)
		if err != nil {
			return false, err
		}
		result := c.HoldsFor(tally)
		if trace != nil {
			trace.Leaves = append(trace.Leaves, LeafTrace{Path: path, Condition: c, Tally: tally, Cutoff: cutoff, Result: result})
		}
		return result, nil
	case *BucketCondition:
		m, err := f.Membership(ctx, c.BucketID)
		if err != nil {
			return false, fmt.Errorf("reading the membership of %q: %w", c.BucketID, err)
		}
		result := c.HoldsFor(m)
		if trace != nil {
			trace.Leaves = append(trace.Leaves, LeafTrace{Path: path, Condition: c, Membership: m, Result: result})
		}
		return result, nil
	case *Composite:
		// and is decided by a false child, or by a true one.
		decisive := c.Operator == Or
		var decidedBy, paths []string
		for i, child := range c.Conditions {
			childPath := fmt.Sprintf("%s.conditions[%d]", path, i)
			ok, err := evaluate(ctx, child, childPath, now, f, trace)
			if err != nil {
				return false, err
			}
			paths = append(paths, childPath)
			if ok == decisive {
				if trace == nil {
					return decisive, nil
				}
				decidedBy = append(decidedBy, childPath)
			}
		}
		result := !decisive
		if len(decidedBy) > 0 {
			result = decisive
		}
		if trace != nil {
			if decidedBy == nil {
				decidedBy = paths
			}
			trace.Branches = append(trace.Branches, BranchTrace{Path: path, Operator: c.Operator, Result: result, DecidedBy: decidedBy})
		}
		return result, nil
	}
	return false, fmt.Errorf("unknown condition type %T", c)
}

// Cutoff is the first instant inside the window at now (inclusive), or the
// zero time when the condition has no window.
func (c *EventCondition) Cutoff(now time.Time) time.Time {
	if c.Within.IsZero() {
		return time.Time{}
	}
	return now.Add(-c.Within.Std())
}

// tally reads what the leg needs of the user's events since cutoff: a
// count, or, for a leg that filters or aggregates, their properties.
func (c *EventCondition) tally(ctx context.Context, f Facts, cutoff time.Time) (EventTally, error) {
	if !c.Filtered() {
		n, err := f.CountEvents(ctx, c.EventName, cutoff)
		if err != nil {
			return EventTally{}, fmt.Errorf("counting %q events: %w", c.EventName, err)
		}
		return EventTally{InWindow: n, Count: n}, nil
	}
	events, err := f.EventProperties(ctx, c.EventName, cutoff)
	if err != nil {
		return EventTally{}, fmt.Errorf("reading %q events: %w", c.EventName, err)
	}
	return c.Tally(events), nil
}

// Tally is what the leg reads of the properties of the events in its
// window: how many pass where and, for an aggregate, the values of the
// property among those.
func (c *EventCondition) Tally(events []Properties) EventTally {
	t := EventTally{InWindow: int64(len(events))}
next:
	for _, props := range events {
		for _, w := range c.Where {
			v, present := props.Property(w.Property)
			if !w.Holds(v, present, time.Time{}) {
				continue next
			}
		}
		t.Count++
		if !c.Check.IsAggregate() {
			continue
		}
		if v, ok := props[c.Property].(float64); ok {
			t.add(v)
		}
	}
	return t
}

// HoldsFor reports whether the tally of the leg's events satisfies the check.
func (c *EventCondition) HoldsFor(t EventTally) bool {
	test := eventTests[c.Check]
	return test != nil && test(c, t)
}

// eventTests is the evaluate layer of the event checks (see operators.go):
// whether the tally of a leg's events satisfies it.
var eventTests = map[EventCheck]func(c *EventCondition, t EventTally) bool{
	CheckExists:    func(_ *EventCondition, t EventTally) bool { return t.Count > 0 },
	CheckNotExists: func(_ *EventCondition, t EventTally) bool { return t.Count == 0 },
	CheckCount:     func(c *EventCondition, t EventTally) bool { return compareCount(t.Count, c.Operator, c.Value) },
	CheckSum: func(c *EventCondition, t EventTally) bool {
		return t.sum.compare(c.Operator, exactOf(c.Threshold), 1)
	},
	CheckAvg: func(c *EventCondition, t EventTally) bool {
		return t.Fed > 0 && t.sum.compare(c.Operator, exactOf(c.Threshold), t.Fed)
	},
	CheckMin: func(c *EventCondition, t EventTally) bool {
		return t.Fed > 0 && compareNumber(t.Min, c.Operator, c.Threshold)
	},
	CheckMax: func(c *EventCondition, t EventTally) bool {
		return t.Fed > 0 && compareNumber(t.Max, c.Operator, c.Threshold)
	},
}

// comparisonTests is the evaluate layer of the comparisons (see
// operators.go): whether an order, as cmp.Compare gives it, satisfies the
// comparison.
var comparisonTests = map[CountOperator]func(order int) bool{
	CountGt:  func(order int) bool { return order > 0 },
	CountGte: func(order int) bool { return order >= 0 },
	CountLt:  func(order int) bool { return order < 0 },
	CountLte: func(order int) bool { return order <= 0 },
	CountEq:  func(order int) bool { return order == 0 },
}

// compares reports whether order satisfies the comparison op.
func compares(order int, op CountOperator) bool {
	test := comparisonTests[op]
	return test != nil && test(order)
}

// compareNumber compares two doubles as IEEE 754 does: nothing compares
// with NaN.
func compareNumber(a float64, op CountOperator, b float64) bool {
	if math.IsNaN(a) || math.IsNaN(b) {
		return false
	}
	return compares(cmp.Compare(a, b), op)
}

// compareCount compares a count; a count without comparison (CountAny)
// holds above zero.
func compareCount(count int64, op CountOperator, value int64) bool {
	if op == CountAny {
		return count > 0
	}
	return compares(cmp.Compare(count, value), op)
}

// HoldsFor reports whether the membership satisfies the bucket leg.
func (c *BucketCondition) HoldsFor(m MembershipFact) bool {
	test := bucketTests[c.Check]
	return test != nil && test(m)
}

// bucketTests is the evaluate layer of the bucket checks (see
// operators.go).
var bucketTests = map[BucketCheck]func(m MembershipFact) bool{
	CheckMember:    func(m MembershipFact) bool { return m.Member },
	CheckNotMember: func(m MembershipFact) bool { return !m.Member },
}

// Holds reports whether the condition holds for the property's actual
// value at the instant now, which only the relative dates read.
// Comparisons are JSON-type-strict: 1 is not "1", true is not "true", and 1
// equals 1.0. Numbers are float64, as DecodeJSON decodes them.
func (c *PropertyCondition) Holds(actual any, present bool, now time.Time) bool {
	test := propertyTests[c.Operator]
	return test != nil && test(c, actual, present && actual != nil, now)
}

// propertyTests is the evaluate layer of the property operators (see
// operators.go): whether the actual value — which exists when present and
// not null — satisfies the condition at now.
var propertyTests = map[PropertyOperator]func(c *PropertyCondition, actual any, exists bool, now time.Time) bool{
	PropEq: func(c *PropertyCondition, actual any, exists bool, _ time.Time) bool {
		return exists && jsonEqual(actual, c.Value)
	},
	PropNeq: func(c *PropertyCondition, actual any, exists bool, _ time.Time) bool {
		return !exists || !jsonEqual(actual, c.Value)
	},
	PropGt:  numberTest(CountGt),
	PropGte: numberTest(CountGte),
	PropLt:  numberTest(CountLt),
	PropLte: numberTest(CountLte),
	PropContains: func(c *PropertyCondition, actual any, _ bool, _ time.Time) bool {
		a, ok := actual.(string)
		v, _ := c.Value.(string)
		return ok && strings.Contains(a, v)
	},
	PropExists:     func(_ *PropertyCondition, _ any, exists bool, _ time.Time) bool { return exists },
	PropNotExists:  func(_ *PropertyCondition, _ any, exists bool, _ time.Time) bool { return !exists },
	PropWithinLast: dateTest,
	PropBeforeLast: dateTest,
	PropWithinNext: dateTest,
	PropAfterNext:  dateTest,
}

// numberTest is the test of a property that must be a number comparing
// with the condition's value as op says.
func numberTest(op CountOperator) func(c *PropertyCondition, actual any, exists bool, now time.Time) bool {
	return func(c *PropertyCondition, actual any, _ bool, _ time.Time) bool {
		a, ok := actual.(float64)
		v, _ := c.Value.(float64)
		return ok && compareNumber(a, op, v)
	}
}

// dateTest is the test of a relative-date leg (contract §3.6): the
// property read as a time, in the leg's window at now.
func dateTest(c *PropertyCondition, actual any, _ bool, now time.Time) bool {
	t, ok := ParseTime(actual)
	return ok && c.HoldsAt(t, now)
}

// jsonEqual compares two JSON scalars by type and value.
func jsonEqual(a, b any) bool {
	switch a := a.(type) {
	case string:
		b, ok := b.(string)
		return ok && a == b
	case float64:
		b, ok := b.(float64)
		return ok && a == b
	case bool:
		b, ok := b.(bool)
		return ok && a == b
	}
	return false // objects and lists never equal a scalar
}

// Properties is Facts' property half for a decoded properties object.
type Properties map[string]any

// Property returns the key's value and whether it is present.
func (p Properties) Property(name string) (any, bool) {
	v, ok := p[name]
	return v, ok
}

// Event is one event of a user, for in-memory evaluation.
type Event struct {
	Name       string
	OccurredAt time.Time
	Properties Properties // nil for none
}

// MemoryFacts holds everything about one user in memory. It is the reference
// evaluation the SQL compiler is checked against, and serves tests.
type MemoryFacts struct {
	Properties Properties
	Events     []Event
	// Members are the user's memberships, by bucket id.
	Members map[string]MembershipFact
}

// Membership implements Facts.
func (m MemoryFacts) Membership(_ context.Context, bucketID string) (MembershipFact, error) {
	return m.Members[bucketID], nil
}

// Property implements Facts.
func (m MemoryFacts) Property(name string) (any, bool) { return m.Properties.Property(name) }

// CountEvents implements Facts.
func (m MemoryFacts) CountEvents(_ context.Context, name string, since time.Time) (int64, error) {
	var n int64
	for _, e := range m.Events {
		if e.Name == name && !e.OccurredAt.Before(since) {
			n++
		}
	}
	return n, nil
}

// EventProperties implements Facts.
func (m MemoryFacts) EventProperties(_ context.Context, name string, since time.Time) ([]Properties, error) {
	var out []Properties
	for _, e := range m.Events {
		if e.Name == name && !e.OccurredAt.Before(since) {
			out = append(out, e.Properties)
		}
	}
	return out, nil
}
