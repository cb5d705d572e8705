//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bucketworker/bucket-worker/db/dbtest"
)

// TestPushBatchThroughHatchet pushes an NDJSON file with `bucket-worker
// push --batch` to a running worker: 300 events of 100 users in three
// batches. Each batch is one bucket-ingest run; every event is stored once
// under its run's key and index, and the users who bought a pro plan three
// times join.
func TestPushBatchThroughHatchet(t *testing.T) {
	conn, dbURL := dbtest.New(t)
	ctx := context.Background()
	defsDir := definitions(t, map[string]string{"pro-buyers.yaml": "id: pro-buyers\nname: Pro buyers\n" +
		"criteria: {type: event, eventName: purchase, check: count, operator: gte, value: 3, within: 30d, " +
		"where: [{property: plan, operator: eq, value: pro}]}\n"})
	w := startWorker(t, "DATABASE_URL="+dbURL, "DEFINITIONS_DIR="+defsDir)

	var lines []string
	for u := range 100 {
		plan := "pro"
		if u%4 == 0 {
			plan = "basic" // these 25 users do not join
		}
		for range 3 {
			lines = append(lines, fmt.Sprintf(`{"event":"purchase","userId":"b%03d","properties":{"plan":%q,"amount":10}}`, u, plan))
		}
	}
	file := filepath.Join(t.TempDir(), "events.ndjson")
	require.NoError(t, os.WriteFile(file, []byte(strings.Join(lines, "\n")+"\n"), 0o644))
	push := exec.Command(workerBinary(t), "push", "--batch", file, "--batch-size", "100")
	push.Env = os.Environ()
	out, err := push.CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.Contains(t, string(out), "pushed 300 events in 3 batches to events:batch")

	count := func(query string) int {
		var n int
		require.NoError(t, conn.NewRaw(query).Scan(ctx, &n))
		return n
	}
	require.Eventually(t, func() bool {
		return count("SELECT count(*) FROM bucket_memberships WHERE bucket_id = 'pro-buyers' AND status = 'active'") == 75
	}, time.Minute, 200*time.Millisecond, "75 users join\n%s", w.Logs())
	require.Equal(t, 300, count("SELECT count(*) FROM user_events WHERE source = 'ingest'"))
	require.Equal(t, 300, count("SELECT count(*) FROM user_events WHERE idempotency_key ~ '^hatchet-run:[0-9a-f-]+:[0-9]+$'"),
		"each event under its run's key and index")
	require.Equal(t, 3, count("SELECT count(DISTINCT split_part(idempotency_key, ':', 2)) FROM user_events WHERE source = 'ingest'"),
		"one run per batch")
	require.Equal(t, 75, count("SELECT count(*) FROM user_events WHERE event = 'bucket:entered:pro-buyers'"))
	require.Eventually(t, func() bool {
		return count("SELECT count(*) FROM bucket_event_outbox WHERE dispatched_at IS NULL") == 0
	}, time.Minute, 200*time.Millisecond, "the joins' pushes went out")
}
