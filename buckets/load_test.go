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
	require.Len(t, byID, 8)

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

	ending := byID["trial-ending-soon"]
	require.True(t, ending.TimeBased, "a relative date is time-based")
	require.True(t, ending.ReconcileJoins, "relative dates and plain property legs join in the sweep")
	require.True(t, ending.DateJoins)

	pro := byID["pro-buyers"]
	require.True(t, pro.SingleLeg())
	require.False(t, pro.ReconcileJoins)
	require.Equal(t, []string{"purchase"}, pro.EventNames)

	composed := byID["engaged-not-dormant"]
	require.Equal(t, []string{"power-users", "went-dormant"}, composed.References())
	require.False(t, composed.TimeBased, "bucket legs read memberships; the buckets they read move them")
	var before []string
	for _, b := range bs {
		if b.ID == "engaged-not-dormant" {
			break
		}
		before = append(before, b.ID)
	}
	require.Contains(t, before, "power-users", "loaded after the buckets it reads")
	require.Contains(t, before, "went-dormant")

	spenders := byID["big-spenders"]
	require.True(t, spenders.SingleLeg())
	require.Equal(t, buckets.CheckSum, spenders.Criteria.(*buckets.EventCondition).Check)
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

		// Event filters, aggregates and relative dates (contract §3.5, §3.6).
		{"where and aggregate", bucketFile("{type: event, eventName: purchase, check: sum, property: amount, operator: gte, value: 99.5, within: 30d, where: [{property: plan, operator: eq, value: pro}]}"), "", 1},
		{"empty where", bucketFile("{type: event, eventName: e, check: count, operator: gte, value: 1, within: 1d, where: []}"), "buckets/x.yaml: criteria.where: where needs at least one condition", 0},
		{"where not a list", bucketFile("{type: event, eventName: e, check: exists, where: {property: p, operator: exists}}"), "buckets/x.yaml: criteria.where: must be a list", 0},
		{"where with an unknown key", bucketFile("{type: event, eventName: e, check: exists, where: [{property: p, operator: exists, within: 1d}]}"), "buckets/x.yaml: criteria.where[0].within: unknown key", 0},
		{"where with a bad operator", bucketFile("{type: event, eventName: e, check: exists, where: [{property: p, operator: like, value: x}]}"), `buckets/x.yaml: criteria.where[0].operator: unknown property operator "like"`, 0},
		{"where with a relative date", bucketFile("{type: event, eventName: e, check: exists, where: [{property: at, operator: within_last, value: 1d}]}"), `criteria.where[0].operator: relative-date operator "within_last" is allowed on a criteria leg only`, 0},
		{"where neq does not change boundedness", bucketFile("{type: event, eventName: e, check: exists, where: [{property: p, operator: neq, value: 1}]}"), "", 1},
		{"property on count", bucketFile("{type: event, eventName: e, check: count, property: amount, operator: gte, value: 1, within: 1d}"), "buckets/x.yaml: criteria.property: property goes with check sum, avg, min or max only", 0},
		{"property on exists", bucketFile("{type: event, eventName: e, check: exists, property: amount}"), "criteria.property: property goes with check sum, avg, min or max only", 0},
		{"sum without property", bucketFile("{type: event, eventName: e, check: sum, operator: gte, value: 1, within: 1d}"), `buckets/x.yaml: criteria: property is required with check "sum"`, 0},
		{"sum with a string value", bucketFile("{type: event, eventName: e, check: sum, property: amount, operator: gte, value: \"100\", within: 1d}"), `buckets/x.yaml: criteria.value: must be a number with check "sum"`, 0},
		{"avg without operator", bucketFile("{type: event, eventName: e, check: avg, property: amount, value: 3}"), `criteria: operator and value are required with check "avg"`, 0},
		{"max with a bad comparison", bucketFile("{type: event, eventName: e, check: max, property: amount, operator: neq, value: 3}"), `criteria.operator: unknown comparison "neq"`, 0},
		{"unknown check", bucketFile("{type: event, eventName: e, check: median, property: amount, operator: gt, value: 3}"), `criteria.check: unknown event check "median": use exists, not_exists, count, sum, avg, min or max`, 0},
		{"unbounded sum lt", bucketFile("{type: event, eventName: e, check: sum, property: amount, operator: lt, value: 100}"), "criteria must be bounded: criteria can match users with no data", 0},
		{"unbounded sum eq 0", bucketFile("{type: event, eventName: e, check: sum, property: amount, operator: eq, value: 0}"), "criteria must be bounded", 0},
		{"windowed sum lt is bounded", bucketFile("{type: event, eventName: e, check: sum, property: amount, operator: lt, value: 100, within: 30d}"), "", 1},
		{"sum gt without window is bounded", bucketFile("{type: event, eventName: e, check: sum, property: amount, operator: gt, value: 0}"), "", 1},
		{"avg lt without window is bounded", bucketFile("{type: event, eventName: e, check: avg, property: amount, operator: lt, value: 100}"), "", 1},
		{"relative date", bucketFile("{type: property, property: trial_ends_at, operator: within_next, value: 3d}"), "", 1},
		{"relative date without duration", bucketFile("{type: property, property: trial_ends_at, operator: within_next}"), `buckets/x.yaml: criteria: value is required with operator "within_next": a duration such as 3d`, 0},
		{"relative date with a number", bucketFile("{type: property, property: trial_ends_at, operator: before_last, value: 3}"), "buckets/x.yaml: criteria.value:", 0},
		{"relative date with a bad duration", bucketFile("{type: property, property: trial_ends_at, operator: after_next, value: 3w}"), `buckets/x.yaml: criteria.value: invalid duration "3w"`, 0},
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

// bucketFile is a definitions folder with one bucket of the criteria.
func bucketFile(criteria string) fstest.MapFS {
	return fstest.MapFS{"buckets/x.yaml": {Data: []byte("{id: a, name: A, criteria: " + criteria + "}")}}
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
	t.Run("a relative date is time-based and joins in the sweep", func(t *testing.T) {
		b := load(t, "{id: a, name: A, criteria: {type: property, property: trial_ends_at, operator: within_next, value: 3d}}")
		require.True(t, b.TimeBased)
		require.True(t, b.DateJoins)
		require.True(t, b.ReconcileJoins)
		require.True(t, b.SingleLeg())
		require.Len(t, b.DateExpiry, 1)
		require.Equal(t, []string{"trial_ends_at"}, b.PropertyNames)
	})
	t.Run("relative date and plain property legs join in the sweep", func(t *testing.T) {
		b := load(t, "{id: a, name: A, criteria: {type: composite, operator: and, conditions: [{type: property, property: plan, operator: eq, value: trial}, {type: property, property: trial_ends_at, operator: within_next, value: 3d}, {type: property, property: seen_at, operator: before_last, value: 1d}]}}")
		require.True(t, b.DateJoins)
		require.True(t, b.ReconcileJoins)
		require.False(t, b.SingleLeg())
		require.Len(t, b.DateExpiry, 1, "only within_next and within_last end by the clock")
	})
	t.Run("a relative date beside an event leg joins only when asked", func(t *testing.T) {
		b := load(t, "{id: a, name: A, criteria: {type: composite, operator: and, conditions: [{type: event, eventName: e, check: exists}, {type: property, property: trial_ends_at, operator: within_next, value: 3d}]}}")
		require.True(t, b.TimeBased)
		require.False(t, b.DateJoins)
		require.False(t, b.ReconcileJoins)
		require.Len(t, b.DateExpiry, 1)
	})
	t.Run("a relative date under an or sets no expiry", func(t *testing.T) {
		b := load(t, "{id: a, name: A, criteria: {type: composite, operator: or, conditions: [{type: property, property: vip, operator: eq, value: true}, {type: property, property: trial_ends_at, operator: within_next, value: 3d}]}}")
		require.False(t, b.DateJoins)
		require.Empty(t, b.DateExpiry)
	})
	t.Run("an event window sets the expiry, not a date", func(t *testing.T) {
		b := load(t, "{id: a, name: A, criteria: {type: composite, operator: and, conditions: [{type: event, eventName: e, check: exists, within: 2d}, {type: property, property: trial_ends_at, operator: within_next, value: 3d}]}}")
		require.Equal(t, buckets.Duration{Hours: 48}, b.ExpiryWindow)
		require.Empty(t, b.DateExpiry)
	})
	t.Run("a filtered or aggregated event leg is a single leg", func(t *testing.T) {
		b := load(t, "{id: a, name: A, criteria: {type: event, eventName: purchase, check: avg, property: amount, operator: gte, value: 10, within: 30d, where: [{property: plan, operator: eq, value: pro}]}}")
		require.True(t, b.SingleLeg())
		require.True(t, b.TimeBased)
		require.Equal(t, []string{"purchase"}, b.EventNames)
		require.Empty(t, b.PropertyNames, "where reads the event's properties, not the contact's")
	})
	t.Run("reentry alias and defaults", func(t *testing.T) {
		b := load(t, "{id: a, name: A, reentry: once, reentryPeriod: 1d, criteria: {type: property, property: p, operator: exists}}")
		require.Equal(t, buckets.EntryOnce, b.EntryLimit)
		require.Equal(t, "hogsend_bucket_a", b.PostHogPropertyKey)
		require.True(t, b.Enabled)
	})
}
