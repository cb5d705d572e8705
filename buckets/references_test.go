package buckets_test

import (
	"fmt"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/stretchr/testify/require"

	"github.com/bucketworker/bucket-worker/buckets"
	"github.com/bucketworker/bucket-worker/buckets/definition"
)

// bucketFiles is a definitions folder of bucket files, file name → YAML.
func bucketFiles(files map[string]string) fstest.MapFS {
	fsys := fstest.MapFS{}
	for name, content := range files {
		fsys["buckets/"+name] = &fstest.MapFile{Data: []byte(content)}
	}
	return fsys
}

const activeBucket = "id: active\nname: Active\ncriteria: {type: event, eventName: app.active, check: exists, within: 7d}\n"

func TestBucketLegsLoadInDependencyOrder(t *testing.T) {
	t.Parallel()
	bs, report := buckets.Load(bucketFiles(map[string]string{
		// b references a, written before it.
		"1-b.yaml": "id: b\nname: B\ncriteria: {type: composite, operator: and, conditions: [" +
			"{type: bucket, bucketId: a, check: member}, {type: bucket, bucketId: active, check: not_member}]}\n",
		"2-a.yaml":      "id: a\nname: A\ncriteria: {type: property, property: plan, operator: eq, value: pro}\n",
		"3-active.yaml": activeBucket,
	}))
	require.NoError(t, report.Err())
	var ids []string
	for _, b := range bs {
		ids = append(ids, b.ID)
	}
	require.Equal(t, []string{"a", "active", "b"}, ids, "each bucket after the buckets it references")
	b := bs[2]
	require.Equal(t, []string{"a", "active"}, b.References())
	require.False(t, b.TimeBased, "a bucket leg does not make a bucket time-based")
	require.Equal(t, "and[bucket a member, bucket active not_member]", buckets.String(b.Criteria))

	reg := buckets.NewRegistry(bs)
	require.Equal(t, []*buckets.Bucket{b}, reg.Dependents("a"))
	require.Equal(t, []*buckets.Bucket{b}, reg.Dependents("active"))
	require.Empty(t, reg.Dependents("b"))
}

// The criteria hash of a bucket with bucket legs covers the hashes of the
// buckets it references: editing a re-evaluates b.
func TestBucketLegHashCoversTheReferencedBucket(t *testing.T) {
	t.Parallel()
	hashes := func(aCriteria string) (a, b string) {
		bs, report := buckets.Load(bucketFiles(map[string]string{
			"a.yaml": "id: a\nname: A\ncriteria: " + aCriteria + "\n",
			"b.yaml": "id: b\nname: B\ncriteria: {type: composite, operator: and, conditions: [" +
				"{type: bucket, bucketId: a, check: member}, {type: property, property: x, operator: exists}]}\n",
		}))
		require.NoError(t, report.Err())
		return bs[0].CriteriaHash, bs[1].CriteriaHash
	}
	a1, b1 := hashes("{type: property, property: plan, operator: eq, value: pro}")
	a2, b2 := hashes("{type: property, property: plan, operator: eq, value: team}")
	require.NotEqual(t, a1, a2)
	require.NotEqual(t, b1, b2, "b's hash changes with a's criteria")
	_, b3 := hashes("{type: property, property: plan, operator: eq, value: pro}")
	require.Equal(t, b1, b3, "and only with them")
}

func TestBucketLegValidation(t *testing.T) {
	t.Parallel()
	chain := map[string]string{}
	for i := range 10 { // c0 ← c1 ← … ← c9: c9 is nine deep
		criteria := "{type: property, property: plan, operator: eq, value: pro}"
		if i > 0 {
			criteria = fmt.Sprintf("{type: bucket, bucketId: c%d, check: member}", i-1)
		}
		chain[fmt.Sprintf("c%d.yaml", i)] = fmt.Sprintf("id: c%d\nname: C%d\ncriteria: %s\n", i, i, criteria)
	}
	for _, tc := range []struct {
		name  string
		files map[string]string
		want  []definition.Error
	}{
		{"unknown bucket", map[string]string{"b.yaml": "id: b\nname: B\ncriteria: {type: bucket, bucketId: nope, check: member}\n"},
			[]definition.Error{{File: "buckets/b.yaml", Path: "criteria.bucketId", Message: `no bucket "nope" is loaded`}}},
		{"disabled bucket", map[string]string{
			"a.yaml": "id: a\nname: A\nenabled: false\ncriteria: {type: property, property: plan, operator: eq, value: pro}\n",
			"b.yaml": "id: b\nname: B\ncriteria: {type: bucket, bucketId: a, check: member}\n"},
			[]definition.Error{{File: "buckets/b.yaml", Path: "criteria.bucketId", Message: `bucket "a" is disabled`}}},
		{"a cycle", map[string]string{
			"a.yaml": "id: a\nname: A\ncriteria: {type: composite, operator: and, conditions: [{type: bucket, bucketId: b, check: member}, {type: property, property: x, operator: exists}]}\n",
			"b.yaml": "id: b\nname: B\ncriteria: {type: bucket, bucketId: a, check: member}\n"},
			[]definition.Error{
				{File: "buckets/a.yaml", Path: "criteria.conditions[0].bucketId", Message: "the bucket legs form a cycle: a → b → a"},
				{File: "buckets/b.yaml", Path: "criteria.bucketId", Message: "the bucket legs form a cycle: b → a → b"}}},
		{"a chain nine deep", chain,
			[]definition.Error{{File: "buckets/c9.yaml", Path: "criteria.bucketId", Message: `the chain of bucket legs from "c9" is 9 deep; at most 8`}}},
		{"not_member is unbounded", map[string]string{"active.yaml": activeBucket,
			"b.yaml": "id: b\nname: B\ncriteria: {type: bucket, bucketId: active, check: not_member}\n"},
			[]definition.Error{{File: "buckets/b.yaml", Path: "criteria", Message: "criteria must be bounded: criteria can match users with no data"}}},
		{"an unknown check", map[string]string{"active.yaml": activeBucket,
			"b.yaml": "id: b\nname: B\ncriteria: {type: bucket, bucketId: active, check: inside}\n"},
			[]definition.Error{{File: "buckets/b.yaml", Path: "criteria.check", Message: `unknown bucket check "inside": use member or not_member`}}},
		{"a bucket with errors of its own", map[string]string{
			"a.yaml": "id: a\nname: A\ncriteria: {type: bucket, bucketId: nope, check: member}\n",
			"b.yaml": "id: b\nname: B\ncriteria: {type: bucket, bucketId: a, check: member}\n"},
			[]definition.Error{
				{File: "buckets/a.yaml", Path: "criteria.bucketId", Message: `no bucket "nope" is loaded`},
				{File: "buckets/b.yaml", Path: "criteria.bucketId", Message: `bucket "a" has errors of its own`}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bs, report := buckets.Load(bucketFiles(tc.files))
			require.Len(t, report.Errors, len(tc.want), "errors:\n%s", report.Errors)
			for i, w := range tc.want {
				got := report.Errors[i]
				require.Equal(t, w.File, got.File, "%s", got)
				require.Equal(t, w.Path, got.Path, "%s", got)
				require.True(t, strings.HasPrefix(got.Message, w.Message), "%q does not start with %q", got.Message, w.Message)
			}
			for _, b := range bs {
				for _, w := range tc.want {
					require.NotEqual(t, strings.TrimSuffix(strings.TrimPrefix(w.File, "buckets/"), ".yaml"), b.ID, "a bucket with an error is left out")
				}
			}
		})
	}
	// Without a.yaml's leg, a not_member and a bounded leg together are fine.
	_, report := buckets.Load(bucketFiles(map[string]string{"active.yaml": activeBucket,
		"b.yaml": "id: b\nname: B\ncriteria: {type: composite, operator: and, conditions: [" +
			"{type: bucket, bucketId: active, check: not_member}, {type: event, eventName: app.seen, check: exists}]}\n"}))
	require.NoError(t, report.Err())
}

func TestEnabledBucketsMustIncludeTheReferenced(t *testing.T) {
	t.Parallel()
	bs, report := buckets.Load(bucketFiles(map[string]string{"active.yaml": activeBucket,
		"b.yaml": "id: b\nname: B\ncriteria: {type: bucket, bucketId: active, check: member}\n"}))
	require.NoError(t, report.Err())
	enabled, _, errs := buckets.Enabled(bs, definition.ParseSelection("b"))
	require.Len(t, enabled, 1)
	require.Equal(t, []definition.Error{{File: "buckets/b.yaml", Path: "criteria.bucketId",
		Message: `bucket "active" is not enabled (ENABLED_BUCKETS): a bucket leg needs it enabled`}}, errs)
	_, _, errs = buckets.Enabled(bs, definition.ParseSelection("*"))
	require.Empty(t, errs)
}
