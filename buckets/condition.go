package buckets

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/bucketworker/bucket-worker/buckets/definition"
)

// Condition is a node of a criteria tree: a *PropertyCondition, an
// *EventCondition, a *BucketCondition or a *Composite.
type Condition interface {
	// canonical returns the object hashed for the criteria hash.
	canonical() jsonObject
}

// PropertyOperator compares a contact property.
type PropertyOperator string

// The property operators of contract §3.1.
const (
	PropEq        PropertyOperator = "eq"
	PropNeq       PropertyOperator = "neq"
	PropGt        PropertyOperator = "gt"
	PropGte       PropertyOperator = "gte"
	PropLt        PropertyOperator = "lt"
	PropLte       PropertyOperator = "lte"
	PropContains  PropertyOperator = "contains"
	PropExists    PropertyOperator = "exists"
	PropNotExists PropertyOperator = "not_exists"
)

// The relative-date operators of contract §3.6: the property holds a time,
// compared with the clock.
const (
	PropWithinLast PropertyOperator = "within_last"
	PropBeforeLast PropertyOperator = "before_last"
	PropWithinNext PropertyOperator = "within_next"
	PropAfterNext  PropertyOperator = "after_next"
)

// EventCheck is what an event condition asks of the user's events.
type EventCheck string

// The event checks of contract §3.2.
const (
	CheckExists    EventCheck = "exists"
	CheckNotExists EventCheck = "not_exists"
	CheckCount     EventCheck = "count"
)

// The aggregate checks of contract §3.5: they read a numeric property of
// the events instead of counting them.
const (
	CheckSum EventCheck = "sum"
	CheckAvg EventCheck = "avg"
	CheckMin EventCheck = "min"
	CheckMax EventCheck = "max"
)

// CountOperator compares an event count with a value.
type CountOperator string

// The count operators of contract §3.2; CountAny ("") is a count without
// operator, true when the count is above zero.
const (
	CountAny CountOperator = ""
	CountGt  CountOperator = "gt"
	CountGte CountOperator = "gte"
	CountLt  CountOperator = "lt"
	CountLte CountOperator = "lte"
	CountEq  CountOperator = "eq"
)

// BucketCheck is what a bucket leg asks of the user's membership of
// another bucket (contract §13).
type BucketCheck string

// The checks of a bucket leg.
const (
	CheckMember    BucketCheck = "member"
	CheckNotMember BucketCheck = "not_member"
)

// LogicOperator joins the children of a composite.
type LogicOperator string

// The composite operators.
const (
	And LogicOperator = "and"
	Or  LogicOperator = "or"
)

// PropertyCondition tests one top-level key of the contact's properties
// (or, in an event leg's where, of the event's).
type PropertyCondition struct {
	Property string
	Operator PropertyOperator
	// Value is a string, a float64 or a bool; nil for exists/not_exists
	// and the relative-date operators.
	Value any
	// Span is the duration of a relative-date operator.
	Span Duration
}

// EventCondition tests the user's events named EventName, optionally only
// within a trailing window and only those passing Where: how many there
// are, or an aggregate of their numeric Property.
type EventCondition struct {
	EventName string
	Check     EventCheck
	Operator  CountOperator
	Value     int64 // the count compared with, when Check is count and Operator set
	Within    Duration
	// Where keeps only the events whose own properties satisfy every
	// condition (contract §3.5); nil counts every event.
	Where []*PropertyCondition
	// Property is the event property an aggregate check reads, and
	// Threshold the number it is compared with.
	Property  string
	Threshold float64
}

// Filtered reports whether the leg needs the events' properties: it has a
// where or aggregates.
func (c *EventCondition) Filtered() bool { return len(c.Where) > 0 || c.Check.IsAggregate() }

// BucketCondition reads the user's materialized membership of another
// bucket (contract §13): member holds while the user has an active,
// undeleted membership of BucketID; not_member while not. It never
// evaluates the other bucket's criteria.
type BucketCondition struct {
	BucketID string
	Check    BucketCheck
	// hash is the criteria hash of the bucket referenced, which the
	// criteria hash of the referencing bucket covers; Load sets it.
	hash string
	// file and path are where the leg is written, for the errors of the
	// references between buckets.
	file, path string
}

// Composite joins conditions with and/or.
type Composite struct {
	Operator   LogicOperator
	Conditions []Condition
}

func (c *PropertyCondition) canonical() jsonObject {
	obj := c.canonicalFilter()
	obj["type"] = "property"
	return obj
}

// canonicalFilter is the condition without its type, as a where holds it.
func (c *PropertyCondition) canonicalFilter() jsonObject {
	obj := jsonObject{"property": c.Property, "operator": string(c.Operator)}
	switch {
	case c.Operator.IsRelativeDate():
		obj["value"] = c.Span.canonical()
	case c.Value != nil:
		obj["value"] = c.Value
	}
	return obj
}

func (c *EventCondition) canonical() jsonObject {
	obj := jsonObject{"type": "event", "eventName": c.EventName, "check": string(c.Check)}
	switch {
	case c.Check.IsAggregate():
		obj["property"] = c.Property
		obj["operator"] = string(c.Operator)
		obj["value"] = c.Threshold
	case c.Operator != CountAny:
		obj["operator"] = string(c.Operator)
		obj["value"] = c.Value
	}
	if !c.Within.IsZero() {
		obj["within"] = c.Within.canonical()
	}
	if len(c.Where) > 0 {
		where := make([]any, len(c.Where))
		for i, w := range c.Where {
			where[i] = w.canonicalFilter()
		}
		obj["where"] = where
	}
	return obj
}

func (c *BucketCondition) canonical() jsonObject {
	return jsonObject{"type": "bucket", "bucketId": c.BucketID, "check": string(c.Check), "bucketHash": c.hash}
}

func (c *Composite) canonical() jsonObject {
	children := make([]any, len(c.Conditions))
	for i, child := range c.Conditions {
		children[i] = child.canonical()
	}
	return jsonObject{"type": "composite", "operator": string(c.Operator), "conditions": children}
}

// String writes the condition compactly for people: `plan eq "trial"`,
// `key.action count gte 10 within 720h`, `and[...]`.
func String(c Condition) string {
	switch c := c.(type) {
	case *PropertyCondition:
		switch {
		case c.Operator.IsRelativeDate():
			return fmt.Sprintf("%s %s %s", c.Property, c.Operator, c.Span)
		case c.Value == nil:
			return c.Property + " " + string(c.Operator)
		}
		return fmt.Sprintf("%s %s %s", c.Property, c.Operator, stableJSON(c.Value))
	case *EventCondition:
		s := c.EventName + " " + string(c.Check)
		switch {
		case c.Check.IsAggregate():
			s += fmt.Sprintf("(%s) %s %s", c.Property, c.Operator, jsNumber(c.Threshold))
		case c.Operator != CountAny:
			s += fmt.Sprintf(" %s %d", c.Operator, c.Value)
		}
		if !c.Within.IsZero() {
			s += " within " + c.Within.String()
		}
		if len(c.Where) > 0 {
			parts := make([]string, len(c.Where))
			for i, w := range c.Where {
				parts[i] = String(w)
			}
			s += " where [" + strings.Join(parts, ", ") + "]"
		}
		return s
	case *BucketCondition:
		return "bucket " + c.BucketID + " " + string(c.Check)
	case *Composite:
		parts := make([]string, len(c.Conditions))
		for i, child := range c.Conditions {
			parts[i] = String(child)
		}
		return string(c.Operator) + "[" + strings.Join(parts, ", ") + "]"
	}
	return ""
}

// Walk calls fn for every node of the tree, depth first, with its path
// relative to the root ("" for the root, "conditions[1]" for a child).
func Walk(c Condition, fn func(path string, c Condition)) {
	walk(c, "", fn)
}

func walk(c Condition, path string, fn func(string, Condition)) {
	fn(path, c)
	if comp, ok := c.(*Composite); ok {
		for i, child := range comp.Conditions {
			walk(child, joinPath(path, fmt.Sprintf("conditions[%d]", i)), fn)
		}
	}
}

func joinPath(base, p string) string {
	if base == "" {
		return p
	}
	return base + "." + p
}

// The limits of a criteria tree (contract §2).
const (
	MaxCriteriaDepth      = 32
	MaxCriteriaConditions = 10_000
)

// decodeCriteria reads a criteria tree within the limits.
func decodeCriteria(n *definition.Node) (Condition, bool) {
	d := &criteriaDecoder{}
	c, ok := d.condition(n, 1)
	if d.conditions > MaxCriteriaConditions {
		n.Errorf("the criteria have %d conditions; at most %d are allowed", d.conditions, MaxCriteriaConditions)
		return nil, false
	}
	return c, ok
}

// criteriaDecoder counts the conditions of the tree it reads.
type criteriaDecoder struct{ conditions int }

// condition reads a condition at the depth (1 for the root) and checks the
// rules that concern a single node.
func (d *criteriaDecoder) condition(n *definition.Node, depth int) (Condition, bool) {
	d.conditions++
	if depth > MaxCriteriaDepth {
		n.Errorf("the criteria nest deeper than %d levels", MaxCriteriaDepth)
		return nil, false
	}
	if n.IsList() || n.IsNull() {
		n.Errorf("must be a condition object")
		return nil, false
	}
	fields, ok := n.PeekFields()
	if !ok {
		n.Errorf("must be a condition object")
		return nil, false
	}
	typ := ""
	typeNode, hasType := fields["type"]
	if hasType {
		typ, _ = typeNode.ScalarString()
	}
	switch typ {
	case "property":
		c, ok := decodePropertyCondition(n, true)
		return c, ok
	case "event":
		return decodeEventCondition(n)
	case "bucket":
		return decodeBucketCondition(n)
	case "composite":
		return d.composite(n, depth)
	case "email_engagement":
		n.Errorf("email_engagement conditions are not allowed in bucket criteria")
		return nil, false
	default:
		if !hasType {
			n.Errorf(`type is required: "property", "event", "bucket" or "composite"`)
			return nil, false
		}
		typeNode.Errorf(`unknown condition type %q: use "property", "event", "bucket" or "composite"`, typ)
		return nil, false
	}
}

// decodeBucketCondition reads a bucket leg (contract §13). Whether the
// bucket it names exists is checked once every bucket is loaded (link).
func decodeBucketCondition(n *definition.Node) (Condition, bool) {
	fields, ok := n.Fields("type", "bucketId", "check")
	if !ok {
		return nil, false
	}
	c := &BucketCondition{file: n.File()}
	id, valid := requiredString(n, fields, "bucketId", true)
	if valid {
		c.BucketID, c.path = id, fields["bucketId"].Path()
		if !definition.IDPattern.MatchString(id) {
			fields["bucketId"].Errorf("%q is not a bucket id", id)
			valid = false
		}
	}
	check, checkOK := requiredString(n, fields, "check", true)
	c.Check = BucketCheck(check)
	if checkOK && !slices.Contains(bucketChecks, c.Check) {
		fields["check"].Errorf("unknown bucket check %q: use %s", check, orList(bucketChecks))
		checkOK = false
	}
	return c, valid && checkOK
}

// DecodePropertyCondition reads a property condition of §3.1; journeys use
// it for their where clauses. The type key is optional there.
func DecodePropertyCondition(n *definition.Node) (*PropertyCondition, bool) {
	return decodePropertyCondition(n, false)
}

// decodePropertyCondition reads a property condition; relative dates
// (contract §3.6) only where relative says they may be: in criteria, not
// in a where, which has no clock of its own.
func decodePropertyCondition(n *definition.Node, relative bool) (*PropertyCondition, bool) {
	fields, ok := n.Fields("type", "property", "operator", "value")
	if !ok {
		return nil, false
	}
	valid := true
	if t, ok := fields["type"]; ok {
		if s, _ := t.ScalarString(); s != "property" {
			t.Errorf(`must be "property"`)
			valid = false
		}
	}
	c := &PropertyCondition{}
	c.Property, valid = requiredString(n, fields, "property", valid)
	if valid && c.Property == "" {
		fields["property"].Errorf("must not be empty")
		valid = false
	}
	op, opOK := requiredString(n, fields, "operator", true)
	c.Operator = PropertyOperator(op)
	valueNode, hasValue := fields["value"]
	if !opOK {
		return nil, false
	}
	spec, known := lookupProperty(c.Operator)
	switch {
	case !known:
		var ops []string
		for _, p := range propertyOperators {
			if relative || p.value != spanValue {
				ops = append(ops, string(p.op))
			}
		}
		fields["operator"].Errorf("unknown property operator %q: use %s", op, orList(ops))
		return c, false
	case spec.value == noValue:
		if hasValue {
			valueNode.Errorf("must be absent with operator %q", op)
			valid = false
		}
	case spec.value == spanValue && !relative:
		fields["operator"].Errorf("relative-date operator %q is allowed on a criteria leg only, not in a where", op)
		valid = false
	case !hasValue && spec.value == spanValue:
		n.Errorf("value is required with operator %q: a duration such as 3d", op)
		return nil, false
	case !hasValue:
		n.Errorf("value is required with operator %q", op)
		return nil, false
	case spec.value == spanValue:
		d, ok := DecodeDuration(valueNode)
		valid = valid && ok
		c.Span = d
	default:
		v, ok := valueNode.Scalar()
		if !ok {
			return nil, false
		}
		c.Value = v
		if _, isNumber := v.(float64); spec.value == numberValue && !isNumber {
			valueNode.Errorf("must be a number with operator %q", op)
			valid = false
		}
		if _, isString := v.(string); spec.value == stringValue && !isString {
			valueNode.Errorf("must be a string with operator %q", op)
			valid = false
		}
	}
	return c, valid
}

func decodeEventCondition(n *definition.Node) (Condition, bool) {
	fields, ok := n.Fields("type", "eventName", "check", "operator", "value", "within", "where", "property")
	if !ok {
		return nil, false
	}
	valid := true
	c := &EventCondition{}
	c.EventName, valid = requiredString(n, fields, "eventName", valid)
	if valid {
		switch {
		case c.EventName == "":
			fields["eventName"].Errorf("must not be empty")
			valid = false
		case strings.HasPrefix(c.EventName, "bucket:"):
			fields["eventName"].Errorf("criteria must not reference the reserved bucket:* event %q", c.EventName)
			valid = false
		}
	}
	check, checkOK := requiredString(n, fields, "check", true)
	c.Check = EventCheck(check)
	if !checkOK {
		return nil, false
	}
	spec, known := lookupCheck(c.Check)
	if !known {
		fields["check"].Errorf("unknown event check %q: use %s", check, orList(EventChecks()))
		return nil, false
	}
	opNode, hasOp := fields["operator"]
	valueNode, hasValue := fields["value"]
	propNode, hasProp := fields["property"]
	operator := func() {
		op, ok := opNode.String()
		c.Operator = CountOperator(op)
		if !slices.Contains(comparisons, c.Operator) {
			if ok {
				opNode.Errorf("unknown comparison %q: use %s", op, orList(comparisons))
			}
			valid = false
		}
	}
	switch {
	case spec.aggregate:
		if !hasProp {
			n.Errorf("property is required with check %q: the numeric event property it reads", check)
			valid = false
		} else if p, ok := propNode.String(); !ok {
			valid = false
		} else if p == "" {
			propNode.Errorf("must not be empty")
			valid = false
		} else {
			c.Property = p
		}
	case hasProp:
		var aggregates []EventCheck
		for _, e := range eventChecks {
			if e.aggregate {
				aggregates = append(aggregates, e.check)
			}
		}
		propNode.Errorf("property goes with check %s only", orList(aggregates))
		valid = false
	}
	switch {
	case spec.comparison == numberComparison:
		if !hasOp || !hasValue {
			n.Errorf("operator and value are required with check %q", check)
			return nil, false
		}
		operator()
		v, ok := valueNode.Scalar()
		if f, isNumber := v.(float64); ok && isNumber {
			c.Threshold = f
		} else {
			if ok {
				valueNode.Errorf("must be a number with check %q", check)
			}
			valid = false
		}
	case hasProp:
	case (hasOp || hasValue) && spec.comparison == noComparison:
		n.Errorf("operator and value go with check \"count\" or an aggregate only")
		valid = false
	case hasOp != hasValue:
		n.Errorf("operator and value must be given together")
		valid = false
	case hasOp:
		operator()
		v, ok := valueNode.Int()
		switch {
		case !ok:
			valid = false
		case v < 0:
			valueNode.Errorf("must not be negative")
			valid = false
		}
		c.Value = v
	}
	if w, ok := fields["within"]; ok {
		d, ok := DecodeDuration(w)
		valid = valid && ok
		c.Within = d
	}
	if w, ok := fields["where"]; ok {
		items, ok := w.List()
		switch {
		case !ok:
			valid = false
		case len(items) == 0:
			w.Errorf("where needs at least one condition; leave it out to take every event")
			valid = false
		}
		for _, item := range items {
			f, ok := decodePropertyCondition(item, false)
			valid = valid && ok
			if ok {
				c.Where = append(c.Where, f)
			}
		}
	}
	return c, valid
}

func (d *criteriaDecoder) composite(n *definition.Node, depth int) (Condition, bool) {
	fields, ok := n.Fields("type", "operator", "conditions")
	if !ok {
		return nil, false
	}
	c := &Composite{}
	op, valid := requiredString(n, fields, "operator", true)
	c.Operator = LogicOperator(op)
	if valid && c.Operator != And && c.Operator != Or {
		fields["operator"].Errorf(`unknown composite operator %q: use "and" or "or"`, op)
		valid = false
	}
	list, present := fields["conditions"]
	if !present {
		n.Missing("conditions")
		return nil, false
	}
	items, ok := list.List()
	if !ok {
		return nil, false
	}
	if len(items) == 0 {
		list.Errorf("a composite needs at least one condition")
		return nil, false
	}
	for _, item := range items {
		child, ok := d.condition(item, depth+1)
		valid = valid && ok
		if ok {
			c.Conditions = append(c.Conditions, child)
		}
	}
	return c, valid
}

func requiredString(n *definition.Node, fields map[string]*definition.Node, key string, valid bool) (string, bool) {
	f, ok := fields[key]
	if !ok {
		n.Missing(key)
		return "", false
	}
	s, ok := f.String()
	return s, valid && ok
}

// unbounded returns the path of the first leaf that makes the criteria able
// to match a user about whom nothing is known, or ok=false when the criteria
// are bounded (contract §3.4 rule 1). A leaf is unbounded when the
// evaluator says it holds for a user with no properties and, without a
// window, no events: a windowed absence is a time-bounded one.
func unbounded(c Condition, path string) (string, bool) {
	switch c := c.(type) {
	case *PropertyCondition:
		return path, c.Holds(nil, false, time.Time{})
	case *EventCondition:
		return path, c.Within.IsZero() && c.HoldsFor(EventTally{})
	case *BucketCondition: // a user nobody knows is in no bucket
		return path, c.HoldsFor(MembershipFact{})
	case *Composite:
		first := ""
		for i, child := range c.Conditions {
			p, isUnbounded := unbounded(child, joinPath(path, fmt.Sprintf("conditions[%d]", i)))
			if c.Operator == And && !isUnbounded {
				return "", false
			}
			if c.Operator == Or && isUnbounded {
				return p, true
			}
			if first == "" {
				first = p
			}
		}
		if c.Operator == And {
			return first, true
		}
		return "", false
	}
	return path, false
}

// orList writes the items as "a, b or c".
func orList[T ~string](items []T) string {
	words := make([]string, len(items))
	for i, item := range items {
		words[i] = string(item)
	}
	if len(words) < 2 {
		return strings.Join(words, "")
	}
	return strings.Join(words[:len(words)-1], ", ") + " or " + words[len(words)-1]
}
