//go:build e2e && slow

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

	hatchet "github.com/hatchet-dev/hatchet/sdks/go"
	"github.com/stretchr/testify/require"

	"github.com/bucketworker/bucket-worker/db/dbtest"
)

// TestThreeReplicasShareBatches runs three `bucket-worker run` replicas on
// one Hatchet and one Postgres and pushes 20 000 events of 2 000 users in
// batches of 500 (each user's ten events in one batch, in order of
// occurredAt: two pro purchases join, a downgrade leaves). The replicas
// share the batch runs and the outbox; afterwards each of the 4 000
// transitions is in user_events once and reached Hatchet once, counted by
// idempotency key.
func TestThreeReplicasShareBatches(t *testing.T) {
	const users, perUser = 2000, 10
	conn, dbURL := dbtest.New(t)
	ctx := context.Background()
	defsDir := definitions(t, map[string]string{"e2e-rep.yaml": "id: e2e-rep\nname: E2E replicas\n" +
		"criteria: {type: composite, operator: and, conditions: [{type: property, property: plan, operator: eq, value: pro}, " +
		"{type: event, eventName: purchase, check: count, operator: gte, value: 2, within: 30d}]}\n"})
	client, err := hatchet.NewClient()
	require.NoError(t, err)
	seen := listen(t, client, "e2e-rep-listener", "bucket:entered:e2e-rep", "bucket:left:e2e-rep")
	var replicas []*worker
	for range 3 {
		replicas = append(replicas, startWorker(t, "DATABASE_URL="+dbURL, "DEFINITIONS_DIR="+defsDir))
		time.Sleep(5 * time.Millisecond) // distinct worker names
	}

	start := time.Now().Add(-time.Hour)
	lines := make([]string, 0, users*perUser)
	for u := range users {
		for k := range perUser {
			at := start.Add(time.Duration(k) * time.Minute).UTC().Format(time.RFC3339Nano)
			if k == perUser-1 {
				lines = append(lines, fmt.Sprintf(`{"event":"contact:updated","userId":"r%04d","occurredAt":%q,"contactProperties":{"plan":"free"}}`, u, at))
				continue
			}
			lines = append(lines, fmt.Sprintf(`{"event":"purchase","userId":"r%04d","occurredAt":%q,"contactProperties":{"plan":"pro"},"properties":{"amount":%d}}`, u, at, k))
		}
	}
	file := filepath.Join(t.TempDir(), "events.ndjson")
	require.NoError(t, os.WriteFile(file, []byte(strings.Join(lines, "\n")), 0o644))
	push := exec.Command(workerBinary(t), "push", "--batch", file, "--batch-size", "500")
	push.Env = os.Environ()
	pushing := time.Now()
	out, err := push.CombinedOutput()
	require.NoError(t, err, "%s", out)

	count := func(query string) int {
		var n int
		require.NoError(t, conn.NewRaw(query).Scan(ctx, &n))
		return n
	}
	logs := func() string {
		var b strings.Builder
		for _, w := range replicas {
			b.WriteString(w.Logs())
		}
		return b.String()
	}
	require.Eventually(t, func() bool { return count("SELECT count(*) FROM user_events WHERE source = 'ingest'") == users*perUser },
		5*time.Minute, time.Second, "every event stored\n%s", logs())
	took := time.Since(pushing)
	t.Logf("%d events pushed and stored in %s: %.0f events/s", users*perUser, took.Round(time.Second), users*perUser/took.Seconds())
	require.Equal(t, users, count("SELECT count(*) FROM bucket_memberships WHERE bucket_id = 'e2e-rep' AND status = 'left' AND entry_count = 1"))
	require.Zero(t, count("SELECT count(*) FROM bucket_memberships WHERE bucket_id = 'e2e-rep' AND status = 'active'"))
	require.Equal(t, 2*users, count("SELECT count(*) FROM user_events WHERE source = 'bucket'"))
	require.Equal(t, 2*users, count("SELECT count(DISTINCT idempotency_key) FROM user_events WHERE source = 'bucket'"))

	// Every push goes out, and is marked so, once: the outbox drains, and
	// no key reaches Hatchet twice.
	require.Eventually(t, func() bool {
		return count("SELECT count(*) FROM bucket_event_outbox WHERE dispatched_at IS NULL") == 0
	}, 5*time.Minute, time.Second, "the outbox drains\n%s", logs())
	require.Eventually(t, func() bool {
		return len(seen("bucket:entered:e2e-rep")) >= users && len(seen("bucket:left:e2e-rep")) >= users
	}, 5*time.Minute, time.Second, "every transition reached Hatchet\n%s", logs())
	time.Sleep(5 * time.Second) // a duplicate push would arrive by now
	// One event per key: one listener run. Hatchet runs a task at least
	// once, so under load one run may be delivered twice; that is not a
	// second push, and is counted apart.
	redelivered := 0
	for _, key := range []string{"bucket:entered:e2e-rep", "bucket:left:e2e-rep"} {
		runs := map[string]map[string]bool{}
		for _, d := range seen(key) {
			k := d.Metadata["idempotencyKey"]
			require.NotEmpty(t, d.RunID)
			if runs[k] == nil {
				runs[k] = map[string]bool{}
			}
			if runs[k][d.RunID] {
				redelivered++
			}
			runs[k][d.RunID] = true
		}
		require.Len(t, runs, users, key)
		for k, ids := range runs {
			require.Len(t, ids, 1, "%s pushed %d times", k, len(ids))
		}
	}
	t.Logf("%d deliveries were Hatchet running a listener run again", redelivered)
	var retried int
	require.NoError(t, conn.NewRaw("SELECT count(*) FROM bucket_event_outbox WHERE attempts > 0").Scan(ctx, &retried))
	t.Logf("%d pushes failed at least once and went out on a retry", retried)
}
