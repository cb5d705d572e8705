package buckets

import (
	"context"
	"fmt"
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
}

// Evaluate reports whether the criteria hold for the user described by f at
// the instant now. Composites stop at the first child that decides them.
func Evaluate(ctx context.Context, c Condition, now time.Time, f Facts) (bool, error) {
	switch c := c.(type) {
	case *PropertyCondition:
		v, present := f.Property(c.Property)
		return c.Holds(v, present), nil
	case *EventCondition:
		n, err := f.CountEvents(ctx, c.EventName, c.Cutoff(now))
		if err != nil {
			return false, fmt.Errorf("counting %q events: %w", c.EventName, err)
		}
		return c.HoldsForCount(n), nil
	case *Composite:
		for _, child := range c.Conditions {
			ok, err := Evaluate(ctx, child, now, f)
			if err != nil {
				return false, err
			}
			if c.Operator == And && !ok {
				return false, nil
			}
			if c.Operator == Or && ok {
				return true, nil
			}
		}
		return c.Operator == And, nil
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

// HoldsForCount reports whether count matching events satisfy the check.
func (c *EventCondition) HoldsForCount(count int64) bool {
	switch c.Check {
	case CheckExists:
		return count > 0
	case CheckNotExists:
		return count == 0
	case CheckCount:
		return compareCount(count, c.Operator, c.Value)
	}
	return false
}

func compareCount(count int64, op CountOperator, value int64) bool {
	switch op {
	case CountAny:
		return count > 0
	case CountGt:
		return count > value
	case CountGte:
		return count >= value
	case CountLt:
		return count < value
	case CountLte:
		return count <= value
	case CountEq:
		return count == value
	}
	return false
}

// Holds reports whether the condition holds for the property's actual value.
// Comparisons are JSON-type-strict: 1 is not "1", true is not "true", and 1
// equals 1.0. Numbers are float64, as encoding/json decodes them.
func (c *PropertyCondition) Holds(actual any, present bool) bool {
	exists := present && actual != nil
	switch c.Operator {
	case PropExists:
		return exists
	case PropNotExists:
		return !exists
	case PropEq:
		return exists && jsonEqual(actual, c.Value)
	case PropNeq:
		return !exists || !jsonEqual(actual, c.Value)
	case PropGt, PropGte, PropLt, PropLte:
		a, ok := actual.(float64)
		v, _ := c.Value.(float64)
		if !ok {
			return false
		}
		switch c.Operator {
		case PropGt:
			return a > v
		case PropGte:
			return a >= v
		case PropLt:
			return a < v
		default:
			return a <= v
		}
	case PropContains:
		a, ok := actual.(string)
		v, _ := c.Value.(string)
		return ok && strings.Contains(a, v)
	}
	return false
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
}

// MemoryFacts holds everything about one user in memory. It is the reference
// evaluation the SQL compiler is checked against, and serves tests.
type MemoryFacts struct {
	Properties Properties
	Events     []Event
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
