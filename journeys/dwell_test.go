package journeys_test

import (
	"testing"
	"testing/fstest"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bucketworker/bucket-worker/buckets/definition"
	"github.com/bucketworker/bucket-worker/journeys"
)

// hogsendExport is what Hogsend's JSON.stringify(meta) writes for
// bucket.on("dwell", {after: days(7)}, …): it loads unchanged.
const hogsendExport = `{"id": "bucket-power-users-on-dwell-after-604800000", "name": "Upgrade nudge",
  "trigger": {"event": "bucket:dwell:power-users:after-604800000"},
  "sourceBucketId": "power-users", "reactionKind": "dwell",
  "dwellSchedule": {"label": "after-604800000", "after": 604800000},
  "entryLimit": "once", "suppress": {"quietHours": true}}`

func TestDwellReactions(t *testing.T) {
	t.Parallel()
	js, report := journeys.Load(fstest.MapFS{
		"journeys/a.json": {Data: []byte(hogsendExport)},
		"journeys/b.yaml": {Data: []byte(`
- id: daily-digest
  trigger: {event: "bucket:dwell:power-users:every-86400000"}
  sourceBucketId: power-users
  reactionKind: dwell
  dwellSchedule: {every: 1d}
- id: daily-survey
  trigger: {event: "bucket:dwell:power-users:every-86400000"}
  sourceBucketId: power-users
  reactionKind: dwell
  dwellSchedule: {every: {hours: 24}, label: every-86400000}
- id: welcome
  trigger: {event: "bucket:entered:power-users"}
  sourceBucketId: power-users
  reactionKind: enter
- id: other-bucket
  trigger: {event: "bucket:dwell:trial:after-3600000"}
  sourceBucketId: trial
  reactionKind: dwell
  dwellSchedule: {after: 1h}
`)},
	})
	require.NoError(t, report.Err())
	require.Equal(t, &journeys.DwellSchedule{Label: "after-604800000", After: 7 * 24 * time.Hour}, js[0].Dwell)
	require.Equal(t, "power-users", js[0].SourceBucketID)
	require.Nil(t, js[3].Dwell, "an enter reaction is an ordinary journey here")

	r := journeys.NewRegistry(js)
	reactions := r.DwellReactions("power-users")
	require.Len(t, reactions, 2)
	require.Equal(t, "after-604800000", reactions[0].Label)
	require.Equal(t, "after 7d", reactions[0].String())
	require.Equal(t, []string{"bucket-power-users-on-dwell-after-604800000"}, reactions[0].Journeys)
	require.Equal(t, "every-86400000", reactions[1].Label)
	require.True(t, reactions[1].Repeats())
	require.Equal(t, 24*time.Hour, reactions[1].Offset())
	require.Equal(t, []string{"daily-digest", "daily-survey"}, reactions[1].Journeys, "two journeys on one schedule share its fires")
	require.Empty(t, r.DwellReactions("nobody"))

	enabled, _ := journeys.Enabled(js, definition.ParseSelection("welcome"))
	require.Empty(t, journeys.NewRegistry(enabled).DwellReactions("power-users"), "only enabled journeys react")
}

func TestDwellReactionErrors(t *testing.T) {
	t.Parallel()
	reaction := func(rest string) string {
		return `{id: r, trigger: {event: "bucket:dwell:b:after-60000"}, sourceBucketId: b, ` + rest + `}`
	}
	for _, tc := range []struct {
		name, def, path, message string
	}{
		{"unknown kind", reaction(`reactionKind: linger`), "reactionKind", `unknown reaction kind "linger"`},
		{"no bucket", `{id: r, trigger: {event: x}, reactionKind: dwell, dwellSchedule: {after: 60000}}`, "sourceBucketId", "is required for a dwell reaction"},
		{"no schedule", reaction(`reactionKind: dwell`), "dwellSchedule", "is required for a dwell reaction"},
		{"both", reaction(`reactionKind: dwell, dwellSchedule: {after: 60000, every: 60000}`), "dwellSchedule", "exactly one of after and every"},
		{"neither", reaction(`reactionKind: dwell, dwellSchedule: {label: after-60000}`), "dwellSchedule", "exactly one of after and every"},
		{"part of a second", reaction(`reactionKind: dwell, dwellSchedule: {after: 60500}`), "dwellSchedule.after", "whole number of seconds"},
		{"zero", reaction(`reactionKind: dwell, dwellSchedule: {after: 0}`), "dwellSchedule.after", "whole number of seconds"},
		{"negative", reaction(`reactionKind: dwell, dwellSchedule: {every: -60000}`), "dwellSchedule.every", "whole number of seconds"},
		{"bad duration", reaction(`reactionKind: dwell, dwellSchedule: {after: 1w}`), "dwellSchedule.after", "invalid duration"},
		{"not a number", reaction(`reactionKind: dwell, dwellSchedule: {after: true}`), "dwellSchedule.after", "whole number"},
		{"wrong label", reaction(`reactionKind: dwell, dwellSchedule: {after: 1m, label: one-minute}`), "dwellSchedule.label", `must be "after-60000"`},
		{"unknown key", reaction(`reactionKind: dwell, dwellSchedule: {after: 1m, at: noon}`), "dwellSchedule.at", "unknown key"},
		{"wrong trigger", reaction(`reactionKind: dwell, dwellSchedule: {after: 2m}`), "trigger.event", `must be "bucket:dwell:b:after-120000"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, report := journeys.Load(fstest.MapFS{"journeys/r.yaml": {Data: []byte(tc.def)}})
			require.Len(t, report.Errors, 1, "%s", report.Errors)
			require.Equal(t, "journeys/r.yaml", report.Errors[0].File)
			require.Equal(t, tc.path, report.Errors[0].Path)
			require.Contains(t, report.Errors[0].Message, tc.message)
		})
	}
}

func TestCheckReactionsNamesTheMissingBucket(t *testing.T) {
	t.Parallel()
	js, report := journeys.Load(fstest.MapFS{"journeys/r.yaml": {Data: []byte(`
- {id: ok, trigger: {event: "bucket:dwell:b:after-60000"}, sourceBucketId: b, reactionKind: dwell, dwellSchedule: {after: 1m}}
- {id: lost, trigger: {event: "bucket:dwell:gone:after-60000"}, sourceBucketId: gone, reactionKind: dwell, dwellSchedule: {after: 1m}}
`)}})
	require.NoError(t, report.Err())
	errs := journeys.CheckReactions(js, func(id string) bool { return id == "b" })
	require.Equal(t, definition.Errors{{File: "journeys/r.yaml", Path: "[1].sourceBucketId", Message: `no bucket has id "gone"`}}, errs)
}
