package buckets

// Adding a criteria operator, event check or comparison
//
// An operator lives in four layers. Each layer is one table with one
// entry per operator, so adding an operator is adding one entry to each:
//
//  1. decode — this file: propertyOperators, eventChecks, comparisons or
//     bucketChecks say what the loader accepts and which value the
//     operator takes. The canonical form, the criteria hash and String
//     follow from the value.
//  2. evaluate — buckets/eval.go: propertyTests, eventTests,
//     comparisonTests or bucketTests, the Go evaluator, which is the
//     reference.
//  3. compile — db/compile.go: propertyCompilers, eventCompilers,
//     comparisonSQL or bucketCompilers, the SQL every path decides with.
//  4. explain — tasks/explain.go: propertyReadings, eventReadings or
//     bucketReadings, what explain shows of a leaf beyond its result.
//
// Then give the conformance table (db/conformance_test.go) cases of it,
// and the differential generator (db/differential_test.go) a way to draw
// it. Until every layer and the conformance table have the operator, a
// test fails: TestOperatorTables here, TestCompilerCoversEveryOperator and
// TestConformanceCoversEveryOperator in db, TestExplainCoversEveryOperator
// in tasks. A relative-date operator also needs its window in DateWindow
// (dates.go), and its end in DateExpiry when the clock alone ends it.
//
// Boundedness (contract §3.4) needs no entry: a leg is unbounded when the
// evaluator says it holds for a user about whom nothing is known.

// valueKind is the value an operator takes.
type valueKind int

const (
	// noValue: the operator takes no value (exists, not_exists).
	noValue valueKind = iota
	// scalarValue: any JSON scalar, compared JSON-type-strict.
	scalarValue
	// numberValue: a JSON number.
	numberValue
	// stringValue: a JSON string.
	stringValue
	// spanValue: a duration, the span of a relative date (contract §3.6).
	spanValue
)

// propertyOperator is the decode entry of a property operator.
type propertyOperator struct {
	op    PropertyOperator
	value valueKind
}

// propertyOperators are the property operators of contract §3.1 and §3.6,
// in the order error messages list them.
var propertyOperators = []propertyOperator{
	{PropEq, scalarValue},
	{PropNeq, scalarValue},
	{PropGt, numberValue},
	{PropGte, numberValue},
	{PropLt, numberValue},
	{PropLte, numberValue},
	{PropContains, stringValue},
	{PropExists, noValue},
	{PropNotExists, noValue},
	{PropWithinLast, spanValue},
	{PropBeforeLast, spanValue},
	{PropWithinNext, spanValue},
	{PropAfterNext, spanValue},
}

// comparisonUse says whether an event check takes operator and value.
type comparisonUse int

const (
	// noComparison: the check takes neither (exists, not_exists).
	noComparison comparisonUse = iota
	// optionalComparison: a count may compare with a whole value; without
	// one it is true above zero.
	optionalComparison
	// numberComparison: an aggregate compares with any number.
	numberComparison
)

// eventCheck is the decode entry of an event check.
type eventCheck struct {
	check      EventCheck
	comparison comparisonUse
	// aggregate: the check reads the numeric event property `property`
	// instead of counting the events (contract §3.5).
	aggregate bool
}

// eventChecks are the checks of contract §3.2 and §3.5.
var eventChecks = []eventCheck{
	{CheckExists, noComparison, false},
	{CheckNotExists, noComparison, false},
	{CheckCount, optionalComparison, false},
	{CheckSum, numberComparison, true},
	{CheckAvg, numberComparison, true},
	{CheckMin, numberComparison, true},
	{CheckMax, numberComparison, true},
}

// comparisons are the operators a count or an aggregate compares with.
var comparisons = []CountOperator{CountGt, CountGte, CountLt, CountLte, CountEq}

// bucketChecks are the checks of a bucket leg (contract §13).
var bucketChecks = []BucketCheck{CheckMember, CheckNotMember}

// PropertyOperators returns every property operator the loader accepts.
func PropertyOperators() []PropertyOperator {
	out := make([]PropertyOperator, len(propertyOperators))
	for i, p := range propertyOperators {
		out[i] = p.op
	}
	return out
}

// EventChecks returns every event check the loader accepts.
func EventChecks() []EventCheck {
	out := make([]EventCheck, len(eventChecks))
	for i, c := range eventChecks {
		out[i] = c.check
	}
	return out
}

// Comparisons returns every comparison a count or an aggregate takes.
func Comparisons() []CountOperator { return append([]CountOperator(nil), comparisons...) }

// BucketChecks returns every check a bucket leg takes.
func BucketChecks() []BucketCheck { return append([]BucketCheck(nil), bucketChecks...) }

func lookupProperty(op PropertyOperator) (propertyOperator, bool) {
	for _, p := range propertyOperators {
		if p.op == op {
			return p, true
		}
	}
	return propertyOperator{}, false
}

func lookupCheck(check EventCheck) (eventCheck, bool) {
	for _, c := range eventChecks {
		if c.check == check {
			return c, true
		}
	}
	return eventCheck{}, false
}

// IsRelativeDate reports whether the operator compares a time property
// with the clock (contract §3.6).
func (op PropertyOperator) IsRelativeDate() bool {
	p, _ := lookupProperty(op)
	return p.value == spanValue
}

// IsAggregate reports whether the check aggregates a numeric property.
func (c EventCheck) IsAggregate() bool {
	e, _ := lookupCheck(c)
	return e.aggregate
}
