//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	hatchet "github.com/hatchet-dev/hatchet/sdks/go"
	"github.com/stretchr/testify/require"

	"github.com/bucketworker/bucket-worker/db"
	"github.com/bucketworker/bucket-worker/db/dbtest"
)

// TestOutboxSurvivesTheProcess runs a sweep in a process that exits
// without reaching Hatchet — as if it died between commit and dispatch —
// and then flushes the outbox from another process: every transition
// reaches Hatchet exactly once.
func TestOutboxSurvivesTheProcess(t *testing.T) {
	conn, dbURL := dbtest.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const leavers = 25
	now := time.Now()
	var members []db.Membership
	for i := range leavers {
		members = append(members, db.Membership{UserID: "crash-" + string(rune('a'+i)), BucketID: "e2e-crash",
			Status: db.StatusActive, EnteredAt: now.Add(-3 * time.Hour), EntryCount: 1})
	}
	require.NoError(t, dbtest.InsertMemberships(ctx, conn, members))
	defsDir := definitions(t, map[string]string{"e2e-crash.yaml": "id: e2e-crash\nname: E2E crash\n" +
		"criteria: {type: event, eventName: app.active, check: exists, within: 1h}\n"})

	client, err := hatchet.NewClient()
	require.NoError(t, err)
	seen := listen(t, client, "e2e-crash-listener", "bucket:left:e2e-crash")

	run := func(withHatchet bool, args ...string) string {
		cmd := exec.CommandContext(ctx, workerBinary(t), args...)
		for _, kv := range os.Environ() {
			if withHatchet || !strings.HasPrefix(kv, "HATCHET_CLIENT_TOKEN=") {
				cmd.Env = append(cmd.Env, kv)
			}
		}
		cmd.Env = append(cmd.Env, "DATABASE_URL="+dbURL, "DEFINITIONS_DIR="+defsDir)
		out, err := cmd.Output()
		require.NoError(t, err, "%v: %s", args, out)
		return string(out)
	}

	var sweep struct {
		Reconciled, Dispatched, Pending int
	}
	require.NoError(t, json.Unmarshal([]byte(run(false, "reconcile", "--json")), &sweep))
	require.Equal(t, leavers, sweep.Reconciled)
	require.Equal(t, 0, sweep.Dispatched)
	require.Equal(t, leavers, sweep.Pending, "committed, not pushed")

	var flushed struct {
		Pending    int  `json:"pending"`
		Dispatched *int `json:"dispatched"`
	}
	require.NoError(t, json.Unmarshal([]byte(run(true, "outbox", "--flush", "--json")), &flushed))
	require.Equal(t, leavers, *flushed.Dispatched)
	require.Equal(t, 0, flushed.Pending)
	require.NoError(t, json.Unmarshal([]byte(run(true, "outbox", "--flush", "--json")), &flushed))
	require.Equal(t, 0, *flushed.Dispatched, "a second flush has nothing left")

	require.Eventually(t, func() bool { return len(seen("bucket:left:e2e-crash")) >= leavers }, 60*time.Second, 250*time.Millisecond)
	time.Sleep(2 * time.Second) // time for a duplicate to show up, if there were one
	var keys []string
	for _, d := range seen("bucket:left:e2e-crash") {
		keys = append(keys, d.Metadata["idempotencyKey"])
	}
	slices.Sort(keys)
	require.Len(t, slices.Compact(slices.Clone(keys)), leavers)
	require.Len(t, keys, leavers, "each transition reached Hatchet once")
}
