package tasks

import (
	"maps"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/bucketworker/bucket-worker/buckets"
)

// TestExplainCoversEveryOperator holds the explain layer to the operators
// the loader accepts (see the checklist in buckets/operators.go).
func TestExplainCoversEveryOperator(t *testing.T) {
	t.Parallel()
	require.ElementsMatch(t, buckets.PropertyOperators(), slices.Collect(maps.Keys(propertyReadings)), "property operators")
	require.ElementsMatch(t, buckets.EventChecks(), slices.Collect(maps.Keys(eventReadings)), "event checks")
	require.ElementsMatch(t, buckets.BucketChecks(), slices.Collect(maps.Keys(bucketReadings)), "bucket checks")
}
