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

// TestConcurrentSinglesShareRounds pushes 300 single events of 300 users
// to Hatchet at once. The worker's runs overlap, and it ingests them in
// shared rounds — bucket_worker_ingest_round_events counts fewer rounds
// than events — while each event is stored once under its run's key, each
// user joins once, and each bucket:entered reaches Hatchet once.
func TestConcurrentSinglesShareRounds(t *testing.T) {
	const n = 300
	conn, dbURL := dbtest.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	defsDir := definitions(t, map[string]string{"e2e-gather.yaml": "id: e2e-gather\nname: E2E gather\n" +
		"criteria: {type: event, eventName: e2e.gather, check: exists, within: 1h}\n"})
	client, err := hatchet.NewClient()
	require.NoError(t, err)
	seen := listen(t, client, "e2e-gather-listener", "bucket:entered:e2e-gather")
	addr := freeAddr(t)
	w := startWorker(t, "DATABASE_URL="+dbURL, "DEFINITIONS_DIR="+defsDir, "METRICS_ADDR="+addr)

	_, err = pushSingles(client, "e2e.gather", "g-", n)
	require.NoError(t, err)
	events := func() (runs, users map[string]bool) {
		runs, users = map[string]bool{}, map[string]bool{}
		for _, d := range seen("bucket:entered:e2e-gather") {
			runs[d.RunID] = true
			users[d.Input["userId"].(string)] = true
		}
		return runs, users
	}
	require.Eventually(t, func() bool { _, users := events(); return len(users) == n }, 2*time.Minute, 200*time.Millisecond, w.Logs())
	time.Sleep(2 * time.Second) // a second push of any of them would have come by now
	runs, _ := events()
	require.Len(t, runs, n, "each join pushed once")

	count := func(query string) (n int) {
		require.NoError(t, conn.NewRaw(query).Scan(ctx, &n))
		return n
	}
	require.Equal(t, n, count("SELECT count(*) FROM user_events WHERE event = 'e2e.gather' AND idempotency_key LIKE 'hatchet-run:%'"))
	require.Equal(t, n, count("SELECT count(DISTINCT user_id) FROM user_events WHERE event = 'e2e.gather'"))
	require.Equal(t, n, count("SELECT count(*) FROM bucket_memberships WHERE bucket_id = 'e2e-gather' AND status = 'active'"))
	require.Equal(t, n, count("SELECT count(*) FROM bucket_event_outbox WHERE event_key = 'bucket:entered:e2e-gather' AND dispatched_at IS NOT NULL"))

	rounds := scrape(t, addr)["bucket_worker_ingest_round_events"].GetMetric()[0].GetHistogram()
	require.Equal(t, float64(n), rounds.GetSampleSum(), "every event went in a round")
	require.Less(t, rounds.GetSampleCount(), uint64(n), "some rounds held more than one event")
	t.Logf("%d events in %d rounds", n, rounds.GetSampleCount())
}
