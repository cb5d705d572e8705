package buckets_test

import (
	"os"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/stretchr/testify/require"

	"github.com/bucketworker/bucket-worker/buckets"
	"github.com/bucketworker/bucket-worker/buckets/definition"
)

func TestLoadExamples(t *testing.T) {
	t.Parallel()
	bs, report := buckets.Load(os.DirFS("../definitions"))
	require.NoError(t, report.Err())
	require.Empty(t, report.Warnings)
	byID := map[string]*buckets.Bucket{}
	for _, b := range bs {
		byID[b.ID] = b
	}
	require.Len(t, byID, 4)

	power := byID["power-users"]
	require.True(t, power.TimeBased)
	require.False(t, power.ReconcileJoins)
	require.Equal(t, buckets.EntryOncePerPeriod, power.EntryLimit)
	require.Equal(t, buckets.Duration{Hours: 168}, power.EntryPeriod)
	require.Equal(t, "11804a22b835bdb9d0e61c43e5c570a74f833f3c25b5379695d5bbc6bc3fbb08", power.CriteriaHash)

	dormant := byID["went-dormant"]
	require.Equal(t, buckets.LapsedActive, dormant.Absence)
	require.True(t, dormant.ReconcileJoins)
	require.Equal(t, "fed78aea11b2d12190bd2fce09eb761541bf9487cb862b2b26b46b29c37a5a22", dormant.CriteriaHash)

	active := byID["active-now"]
	require.True(t, active.FastExpiry)
	require.True(t, active.ArmsExpiry)
	require.Equal(t, buckets.Duration{Minutes: 15}, active.ExpiryWindow)

	trial := byID["trial-expiring-soon"]
	require.False(t, trial.TimeBased)
	require.Equal(t, buckets.Duration{Hours: 336}, trial.MaxDwell)
	require.Equal(t, []string{"plan", "trial_days_left", "trial_ending", "converted"}, trial.PropertyNames)
}

// Every problem of every file is reported at once, each with file and path.
func TestLoadReportsEveryError(t *testing.T) {
	t.Parallel()
	_, report := buckets.Load(os.DirFS("testdata/broken"))
	want := []definition.Error{
		{File: "buckets/a-unknown-key.yaml", Path: "criteria.withn", Message: `unknown key "withn"`},
		{File: "buckets/b-durations.yaml", Path: "[0].criteria.within", Message: `invalid duration "2w"`},
		{File: "buckets/b-durations.yaml", Path: "[1].criteria.within", Message: "duration must be greater than zero"},
		{File: "buckets/b-durations.yaml", Path: "[2].maxDwell", Message: "maxDwell (12h) must not be shorter than minDwell (2d)"},
		{File: "buckets/c-ids.yaml", Path: "[0].id", Message: `invalid id "has:colon"`},
		{File: "buckets/d-dup.json", Path: "id", Message: `duplicate bucket id "dup" (first defined in buckets/c-ids.yaml)`},
		{File: "buckets/e-conditions.yaml", Path: "[0].criteria", Message: "email_engagement conditions are not allowed in bucket criteria"},
		{File: "buckets/e-conditions.yaml", Path: "[1].criteria.eventName", Message: `criteria must not reference the reserved bucket:* event "bucket:entered:x"`},
		{File: "buckets/e-conditions.yaml", Path: "[2].criteria.conditions", Message: "a composite needs at least one condition"},
		{File: "buckets/e-conditions.yaml", Path: "[3].criteria", Message: "criteria must be bounded: [3].criteria.conditions[1] can match users with no data"},
		{File: "buckets/e-conditions.yaml", Path: "[4].criteria.value", Message: `must be a number with operator "gt"`},
		{File: "buckets/f-options.yaml", Path: "[0].kind", Message: `kind:"manual" buckets are not implemented; use a dynamic bucket with criteria`},
		{File: "buckets/f-options.yaml", Path: "[1].fastExpiry", Message: "fastExpiry needs an event leg with within"},
		{File: "buckets/f-options.yaml", Path: "[2].reentry", Message: "give entryLimit or its older name reentry, not both"},
	}
	require.Len(t, report.Errors, len(want), "errors:\n%s", report.Errors)
	for i, w := range want {
		got := report.Errors[i]
		require.Equal(t, w.File, got.File, "error %d: %s", i, got)
		require.Equal(t, w.Path, got.Path, "error %d: %s", i, got)
		require.True(t, strings.HasPrefix(got.Message, w.Message), "error %d: %q does not start with %q", i, got.Message, w.Message)
	}
}

func TestLoadFileShapes(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		files   fstest.MapFS
		wantErr string
		wantN   int
	}{
		{"list file", fstest.MapFS{"buckets/x.yml": {Data: []byte("- {id: a, name: A, criteria: {type: property, property: p, operator: exists}}\n- {id: b, name: B, criteria: {type: property, property: p, operator: exists}}\n")}}, "", 2},
		{"other files are not read", fstest.MapFS{"buckets/notes.txt": {Data: []byte("junk")}, "buckets/sub/x.yaml": {Data: []byte("junk: [")}}, "", 0},
		{"bad yaml", fstest.MapFS{"buckets/x.yaml": {Data: []byte("id: [")}}, "buckets/x.yaml: invalid YAML", 0},
		{"bad json", fstest.MapFS{"buckets/x.json": {Data: []byte(`{"id": }`)}}, "buckets/x.json: invalid JSON", 0},
		{"scalar file", fstest.MapFS{"buckets/x.yaml": {Data: []byte("hello")}}, "buckets/x.yaml: must be an object or a list of objects", 0},
		{"missing fields", fstest.MapFS{"buckets/x.yaml": {Data: []byte("description: d")}}, "buckets/x.yaml: id: is required", 0},
		{"count operator without value", fstest.MapFS{"buckets/x.yaml": {Data: []byte("{id: a, name: A, criteria: {type: event, eventName: e, check: count, operator: gte, within: 1d}}")}}, "buckets/x.yaml: criteria: operator and value must be given together", 0},
		{"exists with value", fstest.MapFS{"buckets/x.yaml": {Data: []byte("{id: a, name: A, criteria: {type: property, property: p, operator: exists, value: 1}}")}}, `buckets/x.yaml: criteria.value: must be absent with operator "exists"`, 0},
		{"unbounded count", fstest.MapFS{"buckets/x.yaml": {Data: []byte("{id: a, name: A, criteria: {type: event, eventName: e, check: count, operator: lt, value: 3}}")}}, "criteria must be bounded: criteria can match users with no data", 0},
		{"windowed count lt is bounded", fstest.MapFS{"buckets/x.yaml": {Data: []byte("{id: a, name: A, criteria: {type: event, eventName: e, check: count, operator: lt, value: 3, within: 1d}}")}}, "", 1},
		{"unbounded and", fstest.MapFS{"buckets/x.yaml": {Data: []byte("{id: a, name: A, criteria: {type: composite, operator: and, conditions: [{type: property, property: p, operator: not_exists}, {type: event, eventName: e, check: not_exists}]}}")}}, "criteria must be bounded: criteria.conditions[0]", 0},
		{"unknown type", fstest.MapFS{"buckets/x.yaml": {Data: []byte("{id: a, name: A, criteria: {type: segment}}")}}, `criteria.type: unknown condition type "segment"`, 0},
		{"value null", fstest.MapFS{"buckets/x.yaml": {Data: []byte("{id: a, name: A, criteria: {type: property, property: p, operator: eq, value: null}}")}}, "criteria.value: must be a string, a number or a boolean", 0},
		{"negative count", fstest.MapFS{"buckets/x.yaml": {Data: []byte("{id: a, name: A, criteria: {type: event, eventName: e, check: count, operator: gt, value: -1}}")}}, "criteria.value: must not be negative", 0},
		{"repeated key", fstest.MapFS{"buckets/x.yaml": {Data: []byte("{id: a, id: b, name: A, criteria: {type: property, property: p, operator: exists}}")}}, "buckets/x.yaml: id: repeated key", 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			bs, report := buckets.Load(tc.files)
			if tc.wantErr == "" {
				require.NoError(t, report.Err())
				require.Len(t, bs, tc.wantN)
				return
			}
			require.Error(t, report.Err())
			require.Contains(t, report.Err().Error(), tc.wantErr)
			require.Len(t, bs, tc.wantN)
		})
	}
}

func TestShapeInference(t *testing.T) {
	t.Parallel()
	load := func(t *testing.T, yaml string) *buckets.Bucket {
		t.Helper()
		bs, report := buckets.Load(fstest.MapFS{"buckets/x.yaml": {Data: []byte(yaml)}})
		require.NoError(t, report.Err())
		require.Len(t, bs, 1)
		return bs[0]
	}
	t.Run("single absence", func(t *testing.T) {
		b := load(t, "{id: a, name: A, criteria: {type: event, eventName: e, check: not_exists, within: 7d}}")
		require.Equal(t, buckets.SingleAbsence, b.Absence)
		require.Equal(t, "e", b.AbsenceEvent)
		require.True(t, b.ReconcileJoins)
		require.True(t, b.TimeBased)
	})
	t.Run("lapsed-active with different events is no absence shape", func(t *testing.T) {
		b := load(t, "{id: a, name: A, criteria: {type: composite, operator: and, conditions: [{type: event, eventName: x, check: exists}, {type: event, eventName: y, check: not_exists, within: 7d}]}}")
		require.Equal(t, buckets.NoAbsenceShape, b.Absence)
		require.False(t, b.ReconcileJoins)
	})
	t.Run("explicit reconcileJoins wins", func(t *testing.T) {
		b := load(t, "{id: a, name: A, reconcileJoins: false, criteria: {type: event, eventName: e, check: not_exists, within: 7d}}")
		require.False(t, b.ReconcileJoins)
	})
	t.Run("explicit timeBased false does not switch off a window", func(t *testing.T) {
		b := load(t, "{id: a, name: A, timeBased: false, criteria: {type: event, eventName: e, check: exists, within: 7d}}")
		require.True(t, b.TimeBased)
	})
	t.Run("first positive window wins over an earlier absence window", func(t *testing.T) {
		b := load(t, "{id: a, name: A, criteria: {type: composite, operator: and, conditions: [{type: event, eventName: x, check: not_exists, within: 1d}, {type: event, eventName: y, check: count, operator: gte, value: 2, within: 3h}]}}")
		require.Equal(t, buckets.Duration{Hours: 3}, b.ExpiryWindow)
	})
	t.Run("fastExpiry on absence only warns and arms nothing", func(t *testing.T) {
		bs, report := buckets.Load(fstest.MapFS{"buckets/x.yaml": {Data: []byte("{id: a, name: A, fastExpiry: true, criteria: {type: event, eventName: e, check: not_exists, within: 7d}}")}})
		require.NoError(t, report.Err())
		require.Len(t, report.Warnings, 1)
		require.Equal(t, "fastExpiry", report.Warnings[0].Path)
		require.False(t, bs[0].ArmsExpiry)
		require.Equal(t, buckets.Duration{Hours: 168}, bs[0].ExpiryWindow)
	})
	t.Run("reentry alias and defaults", func(t *testing.T) {
		b := load(t, "{id: a, name: A, reentry: once, reentryPeriod: 1d, criteria: {type: property, property: p, operator: exists}}")
		require.Equal(t, buckets.EntryOnce, b.EntryLimit)
		require.Equal(t, "hogsend_bucket_a", b.PostHogPropertyKey)
		require.True(t, b.Enabled)
	})
}
