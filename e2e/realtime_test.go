//go:build e2e

package e2e

import (
	"context"
	"syscall"
	"testing"
	"time"

	hatchet "github.com/hatchet-dev/hatchet/sdks/go"
	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/bucketworker/bucket-worker/db"
	"github.com/bucketworker/bucket-worker/db/dbtest"
)

func status(t *testing.T, conn *bun.DB, bucketID, userID string) string {
	rows, err := db.ListMemberships(context.Background(), conn, db.MembershipFilter{BucketID: bucketID, UserID: userID})
	require.NoError(t, err)
	if len(rows) == 0 {
		return "none"
	}
	return rows[0].Status // newest first
}

// TestIngestJoinsFromAPush pushes key.action events to Hatchet: the worker
// ingests them, the third joins the user, and bucket:entered reaches a task
// bound to it.
func TestIngestJoinsFromAPush(t *testing.T) {
	conn, dbURL := dbtest.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	defsDir := definitions(t, map[string]string{"e2e-power.yaml": "id: e2e-power\nname: E2E power\n" +
		"criteria: {type: event, eventName: e2e.action, check: count, operator: gte, value: 3, within: 1h}\n"})
	client, err := hatchet.NewClient()
	require.NoError(t, err)
	seen := listen(t, client, "e2e-power-listener", "bucket:entered:e2e-power")
	w := startWorker(t, "DATABASE_URL="+dbURL, "DEFINITIONS_DIR="+defsDir)

	for i := range 3 {
		require.NoError(t, client.Events().Push(ctx, "e2e.action", map[string]any{"userId": "pusher", "properties": map[string]any{"n": i}}))
	}
	require.Eventually(t, func() bool { return len(seen("bucket:entered:e2e-power")) == 1 }, 60*time.Second, 200*time.Millisecond, w.Logs())
	require.Equal(t, []string{"pusher"}, users(seen("bucket:entered:e2e-power")))
	require.Equal(t, db.StatusActive, status(t, conn, "e2e-power", "pusher"))
	var stored int
	require.NoError(t, conn.NewRaw("SELECT count(*) FROM user_events WHERE event = 'e2e.action' AND idempotency_key LIKE 'hatchet-run:%'").Scan(ctx, &stored))
	require.Equal(t, 3, stored, "each run stored its event under its run id")
}

// TestExpiryTimer joins a fastExpiry bucket with a 5-second window: the
// durable timer makes the member leave near the deadline with no further
// event, and a worker killed during the sleep still leaves the member once.
func TestExpiryTimer(t *testing.T) {
	conn, dbURL := dbtest.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	defsDir := definitions(t, map[string]string{"e2e-fast.yaml": "id: e2e-fast\nname: E2E fast\nfastExpiry: true\n" +
		"criteria: {type: event, eventName: e2e.ping, check: exists, within: 5s}\n"})
	client, err := hatchet.NewClient()
	require.NoError(t, err)
	seen := listen(t, client, "e2e-fast-listener", "bucket:left:e2e-fast")
	env := []string{"DATABASE_URL=" + dbURL, "DEFINITIONS_DIR=" + defsDir}
	w := startWorker(t, env...)

	start := time.Now()
	require.NoError(t, client.Events().Push(ctx, "e2e.ping", map[string]any{"userId": "sleeper"}))
	require.Eventually(t, func() bool { return status(t, conn, "e2e-fast", "sleeper") == db.StatusLeft },
		60*time.Second, 200*time.Millisecond, w.Logs())
	require.GreaterOrEqual(t, time.Since(start), 5*time.Second, "not before the deadline")
	require.Eventually(t, func() bool { return len(seen("bucket:left:e2e-fast")) == 1 }, 30*time.Second, 200*time.Millisecond)

	// Killed mid-sleep: Hatchet hands the durable task to the next worker.
	require.NoError(t, client.Events().Push(ctx, "e2e.ping", map[string]any{"userId": "survivor"}))
	require.Eventually(t, func() bool {
		var armed int
		_ = conn.NewRaw("SELECT count(*) FROM bucket_event_outbox WHERE event_key = 'bucket:arm-expiry' AND dispatched_at IS NOT NULL").Scan(ctx, &armed)
		return armed == 2
	}, 30*time.Second, 100*time.Millisecond, "the second timer was armed")
	time.Sleep(time.Second) // let the timer start its sleep
	require.NoError(t, w.cmd.Process.Signal(syscall.SIGKILL))
	_, _ = w.cmd.Process.Wait()
	w2 := startWorker(t, env...)
	require.Eventually(t, func() bool { return status(t, conn, "e2e-fast", "survivor") == db.StatusLeft },
		120*time.Second, 500*time.Millisecond, w2.Logs())

	var lefts int
	require.NoError(t, conn.NewRaw("SELECT count(*) FROM user_events WHERE event = 'bucket:left:e2e-fast' AND user_id = 'survivor'").Scan(ctx, &lefts))
	require.Equal(t, 1, lefts)
	var source string
	require.NoError(t, conn.NewRaw("SELECT properties->>'source' FROM user_events WHERE event = 'bucket:left:e2e-fast' AND user_id = 'survivor'").Scan(ctx, &source))
	require.Equal(t, "reconcile", source)
}
