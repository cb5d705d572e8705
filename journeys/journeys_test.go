package journeys_test

import (
	"testing"
	"testing/fstest"

	"github.com/stretchr/testify/require"

	"github.com/bucketworker/bucket-worker/buckets/definition"
	"github.com/bucketworker/bucket-worker/journeys"
)

const defs = `
- id: winback
  name: Win back
  trigger: {event: "bucket:entered:went-dormant"}
  exitOn:
    - event: "bucket:left:went-dormant"
    - event: purchase
      where: [{property: amount, operator: gte, value: 10}]
  tags: [retention]
  version: 3
- id: onboarding
  enabled: false
  trigger: {event: "signup"}
- id: generic
  trigger: {event: "bucket:entered"}
`

func load(t *testing.T) []*journeys.Journey {
	t.Helper()
	js, report := journeys.Load(fstest.MapFS{"journeys/j.yaml": {Data: []byte(defs)}})
	require.NoError(t, report.Err())
	require.Len(t, js, 3)
	return js
}

func TestRegistry(t *testing.T) {
	t.Parallel()
	enabled, warnings := journeys.Enabled(load(t), definition.ParseSelection("*"))
	require.Empty(t, warnings)
	require.Len(t, enabled, 2, "a statically disabled journey stays out")
	r := journeys.NewRegistry(enabled)

	require.True(t, r.Binds("bucket:entered"))
	require.False(t, r.Binds("bucket:left"), "no journey binds the generic leave event")
	require.False(t, r.Binds("signup"))
	require.Len(t, r.TriggeredBy("bucket:entered:went-dormant"), 1)

	require.Equal(t, []string{"winback"}, r.ExitingOn("bucket:left:went-dormant", nil))
	require.Equal(t, []string{"winback"}, r.ExitingOn("purchase", map[string]any{"amount": 12.0}))
	require.Empty(t, r.ExitingOn("purchase", map[string]any{"amount": 5.0}), "where must hold")
	require.Empty(t, r.ExitingOn("purchase", map[string]any{"amount": "12"}), "where is JSON-type-strict")
	require.Empty(t, r.ExitingOn("bucket:entered:went-dormant", nil))
}

func TestSelection(t *testing.T) {
	t.Parallel()
	enabled, warnings := journeys.Enabled(load(t), definition.ParseSelection(" generic , missing "))
	require.Len(t, enabled, 1)
	require.Equal(t, "generic", enabled[0].ID)
	require.Equal(t, []string{"ENABLED_JOURNEYS names missing, which matches no journey"}, warnings)
}

func TestLoadErrors(t *testing.T) {
	t.Parallel()
	_, report := journeys.Load(fstest.MapFS{"journeys/bad.yaml": {Data: []byte(`
- {id: "Bad Id", trigger: {event: x}}
- {id: ok}
- {id: dup, trigger: {event: x}}
- {id: dup, trigger: {event: y}}
- {id: w, trigger: {event: x, where: [{property: p, operator: gt, value: "1"}]}, runner: z}
`)}})
	require.Len(t, report.Errors, 5, "%s", report.Errors)
	require.Equal(t, "[0].id", report.Errors[0].Path)
	require.Equal(t, "[1].trigger", report.Errors[1].Path, "a missing key is reported at its own path")
	require.Equal(t, "is required", report.Errors[1].Message)
	require.Contains(t, report.Errors[2].Message, `duplicate journey id "dup"`)
	require.Equal(t, "[4].runner", report.Errors[3].Path)
	require.Equal(t, "[4].trigger.where[0].value", report.Errors[4].Path)
}
