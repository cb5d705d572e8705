//go:build e2e && slow

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	v0 "github.com/hatchet-dev/hatchet/pkg/client"
	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/bucketworker/bucket-worker/db"
	"github.com/bucketworker/bucket-worker/db/dbtest"
	"github.com/bucketworker/bucket-worker/tasks"
)

// The slow tier (build tags e2e and slow; .ci/run runs it): expiry timers
// at production-like windows against a real Hatchet of the test's own, so
// that their load does not slow the other tests down.

// expiryLateness is how long after its deadline a timer may fire.
const expiryLateness = 30 * time.Second

func membership(t *testing.T, conn *bun.DB, bucketID, userID string) db.Membership {
	t.Helper()
	rows, err := db.ListMemberships(context.Background(), conn, db.MembershipFilter{BucketID: bucketID, UserID: userID})
	require.NoError(t, err)
	require.NotEmpty(t, rows, "user %s has no membership of %s", userID, bucketID)
	return rows[0]
}

// TestExpiryAtARealWindow arms timers on a six-minute window, longer than
// Hatchet's default five-minute task timeout: the member leaves through
// its timer within expiryLateness of the deadline. A second member's timer
// is armed only by an arm push delivered two minutes late, with its stale
// msUntilExpiry: it fires at armedExpiresAt, not six minutes after the
// push.
func TestExpiryAtARealWindow(t *testing.T) {
	conn, dbURL := dbtest.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	defsDir := definitions(t, map[string]string{"e2e-six.yaml": "id: e2e-six\nname: E2E six minutes\nfastExpiry: true\n" +
		"criteria: {type: event, eventName: e2e.seen, check: exists, within: 6m}\n"})
	stack := newOwnStack(t)
	client := stack.client()
	w := startWorker(t, append([]string{"DATABASE_URL=" + dbURL, "DEFINITIONS_DIR=" + defsDir}, stack.hatchetVars()...)...)
	start := time.Now()

	for _, u := range []string{"on-time", "late-arm"} {
		require.NoError(t, client.Events().Push(ctx, "e2e.seen", map[string]any{"userId": u}))
	}
	require.Eventually(t, func() bool {
		return status(t, conn, "e2e-six", "on-time") == db.StatusActive && status(t, conn, "e2e-six", "late-arm") == db.StatusActive
	}, time.Minute, 200*time.Millisecond, w.Logs())
	onTime, late := membership(t, conn, "e2e-six", "on-time"), membership(t, conn, "e2e-six", "late-arm")

	// The late arm: only its push arms it, two minutes after the join. The
	// join's own arm run has completed before its timer is taken away.
	require.Eventually(t, func() bool {
		runs := stack.runsOf(tasks.TaskExpiry, "late-arm", start)
		return len(runs) == 1 && runs[0].Status == "COMPLETED"
	}, time.Minute, time.Second)
	_, err := conn.NewRaw("DELETE FROM bucket_expiry_timers WHERE row_id = ?", late.ID).Exec(ctx)
	require.NoError(t, err)
	time.Sleep(2 * time.Minute)
	require.NoError(t, client.Events().Push(ctx, tasks.ArmExpiryEvent, tasks.ArmExpiryInput{
		RowID: late.ID, BucketID: "e2e-six", UserID: "late-arm",
		ArmedExpiresAt: late.ExpiresAt.UTC().Format(tasks.ArmedTimeFormat), MsUntilExpiry: 6 * 60 * 1000,
	}, v0.WithEventMetadata(map[string]string{"userId": "late-arm"})))

	for _, m := range []db.Membership{onTime, late} {
		deadline := *m.ExpiresAt
		require.Eventually(t, func() bool { return status(t, conn, "e2e-six", m.UserID) == db.StatusLeft },
			time.Until(deadline)+expiryLateness, time.Second, "%s did not leave by its deadline + %s\n%s", m.UserID, expiryLateness, w.Logs())
		left := membership(t, conn, "e2e-six", m.UserID)
		require.False(t, left.LeftAt.Before(deadline), "%s left before its deadline", m.UserID)
		t.Logf("%s: deadline %s, left %s after it", m.UserID, deadline.Format(time.TimeOnly), left.LeftAt.Sub(deadline))
		var source string
		require.NoError(t, conn.NewRaw("SELECT properties->>'source' FROM user_events WHERE idempotency_key = ?",
			fmt.Sprintf("bucket:e2e-six:%s:left:1", m.UserID)).Scan(ctx, &source))
		require.Equal(t, "reconcile", source)
	}

	// The expiry runs completed: the join's arm, and the late one.
	for _, u := range []string{"on-time", "late-arm"} {
		runs := stack.runsOf(tasks.TaskExpiry, u, start)
		require.NotEmpty(t, runs, "a bucket-expiry run for %s", u)
		for _, r := range runs {
			require.Equal(t, "COMPLETED", r.Status, "%s: %v", u, r.Output)
			require.Equal(t, tasks.StatusArmed, r.Output["status"], "%s: %v", u, r.Output)
		}
	}
}

// TestTenThousandTimers arms 10 000 timers at once — a first-time backfill
// of a fastExpiry bucket joins 10 000 users silently — on a two-minute
// window. Every timer fires within expiryLateness of its deadline, each
// member leaves once, and an ingest pushed while the timers wait completes
// within seconds. It logs the timers' lateness, p50 and p99.
func TestTenThousandTimers(t *testing.T) {
	const n = 10_000
	start := time.Now().Add(-time.Minute)
	conn, dbURL := dbtest.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	_, err := conn.NewRaw(`
		INSERT INTO contacts (external_id, properties) SELECT 'timer-' || g, '{}' FROM generate_series(1, ?) AS g;
		INSERT INTO user_events (user_id, event, occurred_at) SELECT 'timer-' || g, 'e2e.seen', now() FROM generate_series(1, ?) AS g`, n, n).Exec(ctx)
	require.NoError(t, err)
	defsDir := definitions(t, map[string]string{
		"e2e-many.yaml": "id: e2e-many\nname: E2E many timers\nfastExpiry: true\n" +
			"criteria: {type: event, eventName: e2e.seen, check: exists, within: 3m}\n",
		"e2e-meanwhile.yaml": "id: e2e-meanwhile\nname: E2E meanwhile\n" +
			"criteria: {type: event, eventName: e2e.meanwhile, check: exists}\n",
	})
	stack := newOwnStack(t)
	client := stack.client()
	w := startWorker(t, append([]string{"DATABASE_URL=" + dbURL, "DEFINITIONS_DIR=" + defsDir}, stack.hatchetVars()...)...)

	count := func(query string, args ...any) int {
		var c int
		require.NoError(t, conn.NewRaw(query, args...).Scan(ctx, &c))
		return c
	}
	require.Eventually(t, func() bool { return count("SELECT count(*) FROM bucket_expiry_timers") == n },
		2*time.Minute, time.Second, "the backfill armed every timer\n%s", w.Logs())
	armedAt := time.Now()

	// While the timers wait and their arm runs crowd Hatchet, an ingest
	// still completes within seconds.
	require.NoError(t, client.Events().Push(ctx, "e2e.meanwhile", map[string]any{"userId": "meanwhile"}))
	require.Eventually(t, func() bool { return status(t, conn, "e2e-meanwhile", "meanwhile") == db.StatusActive },
		20*time.Second, 100*time.Millisecond, "an ingest among 10 000 armed timers")
	t.Logf("ingest among %d armed timers committed %s after its push", n, time.Since(armedAt).Round(time.Millisecond))

	var latest time.Time
	require.NoError(t, conn.NewRaw("SELECT max(expires_at) FROM bucket_memberships WHERE bucket_id = 'e2e-many'").Scan(ctx, &latest))
	require.Eventually(t, func() bool {
		return count("SELECT count(*) FROM bucket_memberships WHERE bucket_id = 'e2e-many' AND status = 'left'") == n
	},
		time.Until(latest)+expiryLateness, time.Second, "every timer fired\n%s", w.Logs())
	require.Equal(t, n, count("SELECT count(*) FROM user_events WHERE event = 'bucket:left:e2e-many'"), "one leave each")
	require.Zero(t, count("SELECT count(*) FROM bucket_expiry_timers"))

	var lateness []float64
	require.NoError(t, conn.NewRaw(`SELECT extract(epoch FROM left_at - expires_at)
		FROM bucket_memberships WHERE bucket_id = 'e2e-many'`).Scan(ctx, &lateness))
	slices.Sort(lateness)
	p50, p99 := lateness[len(lateness)/2], lateness[len(lateness)*99/100]
	require.GreaterOrEqual(t, lateness[0], 0.0, "no timer fires early")
	require.Less(t, p99, expiryLateness.Seconds())
	report, _ := json.Marshal(map[string]any{"timers": n, "p50Seconds": p50, "p99Seconds": p99, "maxSeconds": lateness[len(lateness)-1]})
	t.Logf("timer lateness (deadline to leave committed): %s", report)

	// Each arm ran the durable bucket-expiry, which armed nothing more
	// (the join had) and completed: none failed. A push Hatchet took twice
	// runs twice (delivery is at least once).
	var counts map[string]int
	require.Eventually(t, func() bool {
		counts = stack.taskCounts(tasks.TaskExpiry, start)
		return counts["COMPLETED"] >= n && counts["RUNNING"]+counts["QUEUED"] == 0
	}, 5*time.Minute, 5*time.Second, "every bucket-expiry run completes")
	require.Zero(t, counts["FAILED"]+counts["CANCELLED"], "bucket-expiry runs: %v", counts)
	t.Logf("bucket-expiry runs %v, all completed %s after the timers were armed", counts, time.Since(armedAt).Round(time.Second))

	// Hatchet took each arm at most twice: a push that timed out is pushed
	// again, smaller, once.
	arms := stack.pushedEvents(tasks.ArmExpiryEvent)
	require.Len(t, arms, n)
	byTimes := map[int]int{}
	for key, times := range arms {
		require.LessOrEqual(t, times, 2, "arm %s", key)
		byTimes[times]++
	}
	t.Logf("arms taken by Hatchet, by times taken: %v", byTimes)
}
