package db

import (
	"maps"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/bucketworker/bucket-worker/buckets"
)

// TestCompilerCoversEveryOperator holds the compile layer to the operators
// the loader accepts (see the checklist in buckets/operators.go).
func TestCompilerCoversEveryOperator(t *testing.T) {
	t.Parallel()
	require.ElementsMatch(t, buckets.PropertyOperators(), slices.Collect(maps.Keys(propertyCompilers)), "property operators")
	require.ElementsMatch(t, buckets.EventChecks(), slices.Collect(maps.Keys(eventCompilers)), "event checks")
	require.ElementsMatch(t, buckets.Comparisons(), slices.Collect(maps.Keys(comparisonSQL)), "comparisons")
	require.ElementsMatch(t, buckets.BucketChecks(), slices.Collect(maps.Keys(bucketCompilers)), "bucket checks")
}
