package buckets

import (
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestOperatorTables holds the decode and evaluate layers of every
// operator together (see the checklist in operators.go): an operator the
// loader accepts must be evaluated, and an evaluator must belong to an
// operator the loader accepts.
func TestOperatorTables(t *testing.T) {
	t.Parallel()
	require.ElementsMatch(t, PropertyOperators(), slices.Collect(maps.Keys(propertyTests)), "property operators: decode vs evaluate")
	require.ElementsMatch(t, EventChecks(), slices.Collect(maps.Keys(eventTests)), "event checks: decode vs evaluate")
	require.ElementsMatch(t, Comparisons(), slices.Collect(maps.Keys(comparisonTests)), "comparisons: decode vs evaluate")
	require.ElementsMatch(t, BucketChecks(), slices.Collect(maps.Keys(bucketTests)), "bucket checks: decode vs evaluate")
	for _, p := range propertyOperators {
		if p.value == spanValue {
			from, to := (&PropertyCondition{Operator: p.op, Span: Duration{Hours: 1}}).DateWindow(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
			require.False(t, from.IsZero() && to.IsZero(), "relative date %s has a window in DateWindow", p.op)
		}
	}
}
