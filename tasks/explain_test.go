package tasks

import (
	"encoding/json"
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func (e *env) explain(user, bucketID string) Explanation {
	e.t.Helper()
	ex, err := Explain(e.ctx, e.deps, user, bucketID)
	require.NoError(e.t, err)
	return ex
}

func leaf(ex Explanation, path string) LeafVerdict {
	for _, l := range ex.Leaves {
		if l.Path == path {
			return l
		}
	}
	return LeafVerdict{}
}

func TestExplainLeavesAndBranches(t *testing.T) {
	t.Parallel()
	e := newEnv(t, defs{"buckets/engaged-pro.yaml": proAndActive})
	e.contact("free", `{"plan":"free"}`)
	e.events("free", "app.active", 3*day, 10*day)

	ex := e.explain("free", "engaged-pro")
	require.False(t, ex.Verdict)
	require.False(t, ex.Member)
	require.Equal(t, "none", ex.Next)
	plan := leaf(ex, "criteria.conditions[0]")
	require.Equal(t, "property", plan.Type)
	require.False(t, plan.Result)
	require.Equal(t, map[string]any{"present": true, "value": "free", "jsonType": "string"}, plan.Observed)
	active := leaf(ex, "criteria.conditions[1]")
	require.Equal(t, "event", active.Type)
	require.True(t, active.Result)
	require.Equal(t, int64(1), active.Observed["count"], "one event in the 7-day window")
	require.Equal(t, t0.Add(-week), active.Observed["cutoff"])
	require.Equal(t, t0.Add(-3*day), active.Observed["newest"].(*time.Time).UTC())
	require.Equal(t, []BranchVerdict{{Path: "criteria", Operator: "and", Result: false, DecidedBy: []string{"criteria.conditions[0]"}}}, ex.Branches)
}

func TestExplainNestedComposite(t *testing.T) {
	t.Parallel()
	e := newEnv(t, defs{"buckets/t.yaml": `
id: t
name: T
criteria:
  type: composite
  operator: or
  conditions:
    - type: composite
      operator: and
      conditions:
        - {type: property, property: plan, operator: eq, value: trial}
        - {type: property, property: days, operator: lte, value: 3}
    - {type: property, property: vip, operator: eq, value: true}
`})
	e.contact("u", `{"plan":"trial","days":2}`)
	ex := e.explain("u", "t")
	require.True(t, ex.Verdict)
	require.Len(t, ex.Leaves, 3)
	require.Equal(t, map[string]any{"present": false, "value": nil, "jsonType": "absent"}, leaf(ex, "criteria.conditions[1]").Observed)
	require.Equal(t, []BranchVerdict{
		{Path: "criteria.conditions[0]", Operator: "and", Result: true, DecidedBy: []string{"criteria.conditions[0].conditions[0]", "criteria.conditions[0].conditions[1]"}},
		{Path: "criteria", Operator: "or", Result: true, DecidedBy: []string{"criteria.conditions[0]"}},
	}, ex.Branches)
	require.Equal(t, "none", ex.Next, "not a member, and the sweep does not join property buckets")
}

func TestExplainNextSweep(t *testing.T) {
	t.Parallel()
	e := newEnv(t, defs{
		"buckets/hot.yaml":   "id: hot\nname: Hot\nminDwell: 1d\nmaxDwell: 3d\ncriteria: {type: event, eventName: app.active, check: exists, within: 1h}\n",
		"buckets/quiet.yaml": "id: quiet\nname: Quiet\ncriteria: {type: event, eventName: app.active, check: not_exists, within: 7d}\n",
	})
	e.events("dwelling", "app.active", 2*time.Hour)
	m := e.member("hot", "dwelling", 2*time.Hour)
	ex := e.explain("dwelling", "hot")
	require.True(t, ex.Member)
	require.False(t, ex.Verdict)
	require.Equal(t, "leave", ex.Next)
	require.Equal(t, m.EnteredAt.Add(day), ex.NextAt.UTC(), "minDwell holds the member until then")
	require.Equal(t, m.EnteredAt.Add(day), ex.Membership.MinDwellUntil.UTC())

	e.events("expired", "app.active", time.Minute)
	old := e.member("hot", "expired", 4*day)
	old.MaxDwellAt = ptr(t0.Add(-day))
	e.update(old)
	ex = e.explain("expired", "hot")
	require.True(t, ex.Verdict)
	require.Equal(t, "leave", ex.Next)
	require.Equal(t, "maxDwell reached", ex.NextReason)

	e.contact("lapsed", `{}`)
	e.events("lapsed", "app.active", 9*day)
	require.Equal(t, "none", e.explain("lapsed", "quiet").Next, "the join pass is closed until the backfill")
	e.backfilled("quiet")
	require.Equal(t, "join", e.explain("lapsed", "quiet").Next)
	e.contact("never", `{}`)
	ex = e.explain("never", "quiet")
	require.True(t, ex.Verdict)
	require.Equal(t, "none", ex.Next, "the everFired floor")
	require.Equal(t, 1, e.sweep(ReconcileInput{BucketIDs: []string{"quiet"}}).Joined, "the sweep agrees: lapsed joins, never does not")

	require.NoError(t, e.deps.Switch.Set(e.ctx, "quiet", false, t0))
	ex = e.explain("lapsed", "quiet")
	require.False(t, ex.RuntimeEnabled)
	require.Equal(t, "none", ex.Next)
}

func TestExplainCountLeaf(t *testing.T) {
	t.Parallel()
	e := newEnv(t, defs{"buckets/power.yaml": powerUsers})
	e.events("u", "key.action", day, day, day, day, day, day, day, day, day, 40*day)
	ex := e.explain("u", "power")
	require.False(t, ex.Verdict, "9 in the window, one aged out")
	l := leaf(ex, "criteria")
	require.Equal(t, int64(9), l.Observed["count"])
	require.Equal(t, t0.Add(-30*day), l.Observed["cutoff"])
	require.Equal(t, t0.Add(-day), l.Observed["newest"].(*time.Time).UTC())
	e.events("u", "key.action", time.Hour)
	require.True(t, e.explain("u", "power").Verdict)
}

// A number beyond the double range reads as ±Infinity (contract §3.1);
// JSON has no infinities, so explain writes them as "Infinity" and
// "-Infinity", with jsonType number, and its JSON encodes.
func TestExplainInfinityEncodes(t *testing.T) {
	t.Parallel()
	e := newEnv(t, defs{
		"buckets/score.yaml": "id: score\nname: Score\ncriteria: {type: property, property: score, operator: gte, value: 0}\n",
		"buckets/spend.yaml": "id: spend\nname: Spend\ncriteria: {type: event, eventName: purchase, check: sum, property: amount, operator: lt, value: 0, within: 1d}\n",
	})
	e.contact("huge", `{"score":1e999,"nested":{"low":-1e999,"list":[1e999]}}`)
	e.eventsWith("huge", "purchase", `{"amount":-1e999}`, time.Hour)

	ex := e.explain("huge", "score")
	require.True(t, ex.Verdict, "+Infinity >= 0")
	require.Equal(t, map[string]any{"present": true, "value": "Infinity", "jsonType": "number"}, leaf(ex, "criteria").Observed)
	doc, err := json.Marshal(ex)
	require.NoError(t, err)
	require.Contains(t, string(doc), `"value":"Infinity"`)

	ex = e.explain("huge", "spend")
	require.True(t, ex.Verdict)
	require.Equal(t, "-Infinity", leaf(ex, "criteria").Observed["aggregate"])
	_, err = json.Marshal(ex)
	require.NoError(t, err)

	require.Equal(t, map[string]any{"low": "-Infinity", "list": []any{"Infinity"}}, jsonValue(map[string]any{"low": math.Inf(-1), "list": []any{math.Inf(1)}}))
}

// A bucket leg shows the membership it read: the row and when it began,
// or none (contract §13).
func TestExplainBucketLeg(t *testing.T) {
	t.Parallel()
	e := newEnv(t, cascadeDefs)
	e.contact("u", `{"plan":"pro"}`)
	e.ingest("app.active", `{"userId":"u"}`)
	row := e.memberships("recent", "u")[0]

	ex := e.explain("u", "engaged")
	require.True(t, ex.Verdict)
	leg := leaf(ex, "criteria.conditions[0]")
	require.Equal(t, "bucket", leg.Type)
	require.Equal(t, "bucket recent member", leg.Condition)
	require.Equal(t, map[string]any{"member": true, "rowId": row.ID, "enteredAt": row.EnteredAt}, leg.Observed)

	ex = e.explain("u", "lapsed")
	require.False(t, ex.Verdict)
	require.Equal(t, map[string]any{"member": true, "rowId": row.ID, "enteredAt": row.EnteredAt}, leaf(ex, "criteria.conditions[0]").Observed)
	ex = e.explain("nobody", "engaged")
	require.Equal(t, map[string]any{"member": false, "rowId": nil, "enteredAt": nil}, leaf(ex, "criteria.conditions[0]").Observed)
}
