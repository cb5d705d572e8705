//go:build e2e

package e2e

import (
	"context"
	"testing"
	"time"

	hatchet "github.com/hatchet-dev/hatchet/sdks/go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bucketworker/bucket-worker/db"
	"github.com/bucketworker/bucket-worker/db/dbtest"
	"github.com/bucketworker/bucket-worker/tasks"
)

// TestReconcileThroughHatchet registers the sweep with Hatchet, triggers it
// by name, and follows a time-window member's leave from the database to a
// Hatchet event that starts a task listening for it.
func TestReconcileThroughHatchet(t *testing.T) {
	conn, dbURL := dbtest.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// A member whose only event left the one-hour window.
	now := time.Now()
	require.NoError(t, dbtest.InsertUserEvents(ctx, conn, []db.UserEvent{{UserID: "e2e-user", Event: "app.active", OccurredAt: now.Add(-2 * time.Hour)}}))
	require.NoError(t, dbtest.InsertMemberships(ctx, conn, []db.Membership{{UserID: "e2e-user", BucketID: "e2e-window",
		Status: db.StatusActive, EnteredAt: now.Add(-3 * time.Hour), EntryCount: 1}}))
	defsDir := definitions(t, map[string]string{"e2e-window.yaml": "id: e2e-window\nname: E2E window\n" +
		"criteria: {type: event, eventName: app.active, check: exists, within: 1h}\n"})

	client, err := hatchet.NewClient()
	require.NoError(t, err)

	// A task of another worker, bound to the bucket's left event.
	seen := listen(t, client, "e2e-listener", "bucket:left:e2e-window")

	w := startWorker(t, "DATABASE_URL="+dbURL, "DEFINITIONS_DIR="+defsDir)

	// Registration: the cron and the concurrency of contract §6.1.
	workflowID := workflowID(t, client, tasks.TaskReconcile)
	var version struct {
		Triggers struct {
			Crons []struct {
				Cron string `json:"cron"`
			} `json:"crons"`
		} `json:"triggers"`
		V1Concurrency []struct {
			Expression    string `json:"expression"`
			MaxRuns       int    `json:"maxRuns"`
			LimitStrategy string `json:"limitStrategy"`
		} `json:"v1Concurrency"`
	}
	hatchetAPI(t, "/api/v1/workflows/"+workflowID.String()+"/versions", &version)
	require.Len(t, version.Triggers.Crons, 1)
	require.Equal(t, farCron, version.Triggers.Crons[0].Cron)
	require.Len(t, version.V1Concurrency, 1)
	require.Equal(t, tasks.ReconcileConcurrency, version.V1Concurrency[0].Expression)
	require.Equal(t, 1, version.V1Concurrency[0].MaxRuns)
	require.Equal(t, "GROUP_ROUND_ROBIN", version.V1Concurrency[0].LimitStrategy)

	// Trigger by name; the run's output is what the dashboard shows.
	result, err := client.Run(ctx, tasks.TaskReconcile, tasks.ReconcileInput{BucketIDs: []string{"e2e-window"}})
	require.NoError(t, err, w.Logs())
	var out tasks.ReconcileOutput
	require.NoError(t, result.TaskOutput(tasks.TaskReconcile).Into(&out))
	require.Equal(t, 1, out.Reconciled)
	// The push goes out at the end of the run or by the worker's
	// background dispatcher, whichever claims it first; the listener below
	// proves it arrived.
	require.Len(t, out.Buckets, 1)
	require.Equal(t, "e2e-window", out.Buckets[0].BucketID)
	require.Equal(t, 1, out.Buckets[0].Left)

	if !assert.Eventually(t, func() bool { return len(seen("bucket:left:e2e-window")) > 0 }, 60*time.Second, 100*time.Millisecond) {
		t.Fatalf("the bucket:left:e2e-window event did not start the listening task\n%s", w.Logs())
	}
	got := seen("bucket:left:e2e-window")[0]
	require.Equal(t, "e2e-user", got.Input["userId"])
	props, _ := got.Input["properties"].(map[string]any)
	require.Equal(t, "left", props["transition"])
	require.Equal(t, "reconcile", props["source"])
	require.Equal(t, "criteria", props["reason"])
	require.Equal(t, "bucket:e2e-window:e2e-user:left:1", got.Metadata["idempotencyKey"])
	require.Equal(t, "e2e-window", got.Metadata["bucketId"])
	members, err := db.ListMemberships(ctx, conn, db.MembershipFilter{BucketID: "e2e-window", Status: db.StatusLeft})
	require.NoError(t, err)
	require.Len(t, members, 1)
}
