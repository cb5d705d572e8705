//go:build e2e && slow

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"sort"
	"testing"
	"time"

	hatchet "github.com/hatchet-dev/hatchet/sdks/go"
	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/bucketworker/bucket-worker/db"
	"github.com/bucketworker/bucket-worker/db/dbtest"
	"github.com/bucketworker/bucket-worker/tasks"
)

// fanoutBuckets are twelve buckets: ten windows of an hour on events of
// their own, f10 reading f00, and f11 reading f10 — three levels.
func fanoutBuckets() map[string]string {
	files := map[string]string{}
	for i := range 10 {
		files[fmt.Sprintf("f%02d.yaml", i)] = fmt.Sprintf("id: f%02d\nname: F%02d\n"+
			"criteria: {type: event, eventName: e2e.f%02d, check: exists, within: 1h}\n", i, i, i)
	}
	files["f10.yaml"] = "id: f10\nname: F10\ncriteria: {type: bucket, bucketId: f00, check: member}\n"
	files["f11.yaml"] = "id: f11\nname: F11\ncriteria: {type: bucket, bucketId: f10, check: member}\n"
	return files
}

// seedFanout gives each window bucket 200 members, half of whose events
// left the window, and f10 and f11 the members of f00.
func seedFanout(t *testing.T, conn *bun.DB, now time.Time) {
	ctx := context.Background()
	for i := range 10 {
		bucket := fmt.Sprintf("f%02d", i)
		users := dbtest.Users(bucket+"-u", 200)
		fresh, stale := users[:100], users[100:]
		require.NoError(t, dbtest.InsertUserEvents(ctx, conn, dbtest.Events(fresh, "e2e."+bucket, now.Add(-10*time.Minute))))
		require.NoError(t, dbtest.InsertUserEvents(ctx, conn, dbtest.Events(stale, "e2e."+bucket, now.Add(-2*time.Hour))))
		require.NoError(t, dbtest.InsertMemberships(ctx, conn, dbtest.Members(users, bucket, now.Add(-3*time.Hour))))
		if i == 0 {
			require.NoError(t, dbtest.InsertMemberships(ctx, conn, dbtest.Members(users, "f10", now.Add(-3*time.Hour))))
			require.NoError(t, dbtest.InsertMemberships(ctx, conn, dbtest.Members(users, "f11", now.Add(-3*time.Hour))))
		}
	}
}

// recordBackfilled stores the criteria hash of every bucket of the
// definitions, as a backfill would: the §8 diff of the sweep then leaves
// them to the sweep alone.
func recordBackfilled(t *testing.T, conn *bun.DB, defsDir string) {
	cmd := exec.Command(workerBinary(t), "validate", "--json")
	cmd.Env = append(os.Environ(), "DEFINITIONS_DIR="+defsDir)
	out, err := cmd.Output()
	require.NoError(t, err, "%s", out)
	var valid struct {
		Buckets []struct {
			ID           string `json:"id"`
			CriteriaHash string `json:"criteriaHash"`
		} `json:"buckets"`
	}
	require.NoError(t, json.Unmarshal(out, &valid))
	require.Len(t, valid.Buckets, 12)
	for _, b := range valid.Buckets {
		require.NoError(t, db.SetCriteriaHash(context.Background(), conn, b.ID, b.CriteriaHash, time.Now()))
	}
}

// comparableSweep drops what differs between two sweeps of the same data:
// the durations, the workers and what went to Hatchet.
func comparableSweep(out tasks.ReconcileOutput) tasks.ReconcileOutput {
	out.Dispatched, out.Pending, out.Delivered, out.DeliveriesPending = 0, 0, 0, 0
	buckets := slices.Clone(out.Buckets)
	for i := range buckets {
		buckets[i].DurationMs, buckets[i].Worker = 0, ""
	}
	sort.Slice(buckets, func(i, j int) bool { return buckets[i].BucketID < buckets[j].BucketID })
	out.Buckets = buckets
	return out
}

// memberStates is every membership's (bucket, user, status).
func memberStates(t *testing.T, conn *bun.DB) []string {
	var rows []string
	require.NoError(t, conn.NewRaw("SELECT bucket_id || ' ' || user_id || ' ' || status FROM bucket_memberships ORDER BY 1").
		Scan(context.Background(), &rows))
	return rows
}

// TestSweepFansOutAcrossReplicas runs a sweep of twelve buckets in three
// levels on three replicas: the bucket-reconcile-bucket children run on
// more than one worker (their task events say which), a child of a level
// starts only after every child of the level before finished, and the
// parent's output and the memberships equal an in-process sweep of the
// same data.
func TestSweepFansOutAcrossReplicas(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	now := time.Now()
	fanned, fannedURL := dbtest.New(t)
	here, hereURL := dbtest.New(t)
	seedFanout(t, fanned, now)
	seedFanout(t, here, now)
	defsDir := definitions(t, fanoutBuckets())
	recordBackfilled(t, fanned, defsDir)
	recordBackfilled(t, here, defsDir)

	// The same sweep in one process, without Hatchet.
	cmd := exec.Command(workerBinary(t), "reconcile", "--json")
	cmd.Env = append(os.Environ(), "DATABASE_URL="+hereURL, "DEFINITIONS_DIR="+defsDir, "HATCHET_CLIENT_TOKEN=")
	stdout, err := cmd.Output()
	require.NoError(t, err, "%s", stdout)
	var single tasks.ReconcileOutput
	require.NoError(t, json.Unmarshal(stdout, &single))
	cancelStraySweeps(t)

	for range 3 {
		startWorker(t, "DATABASE_URL="+fannedURL, "DEFINITIONS_DIR="+defsDir)
		time.Sleep(5 * time.Millisecond) // distinct worker names
	}
	client, err := hatchet.NewClient()
	require.NoError(t, err)
	began := time.Now()
	result, err := client.Run(ctx, tasks.TaskReconcile, tasks.ReconcileInput{})
	require.NoError(t, err)
	var fanOut tasks.ReconcileOutput
	require.NoError(t, result.TaskOutput(tasks.TaskReconcile).Into(&fanOut))

	require.Len(t, fanOut.Buckets, 12)
	for _, b := range fanOut.Buckets {
		require.Empty(t, b.Error, "%s failed: %+v", b.BucketID, fanOut)
	}
	require.Equal(t, 1000, fanOut.Reconciled, "100 leaves in each window bucket: %+v", fanOut)
	require.Equal(t, 200, fanOut.Cascaded, "f10 and f11 follow f00 in its transactions")
	require.Equal(t, comparableSweep(single), comparableSweep(fanOut))
	require.Equal(t, memberStates(t, here), memberStates(t, fanned))

	// Where each child ran, from its output in Hatchet, and when, from
	// Hatchet's list of the runs.
	workers := map[string]bool{}
	for _, b := range fanOut.Buckets {
		require.NotEmpty(t, b.Worker, b.BucketID)
		workers[b.Worker] = true
	}
	// Hatchet's list of runs is written after the runs end, asynchronously:
	// a child whose output the parent already has may still be listed as
	// running for a moment.
	var runs []childRun
	require.Eventually(t, func() bool {
		runs = childRuns(t, began)
		return len(runs) == 12 && !slices.ContainsFunc(runs, func(r childRun) bool { return r.Status != "COMPLETED" })
	}, 30*time.Second, 500*time.Millisecond, "twelve children listed as completed")
	require.Len(t, runs, 12)
	started, finished := map[string]time.Time{}, map[string]time.Time{}
	for _, r := range runs {
		require.Equal(t, "COMPLETED", r.Status)
		require.NotEmpty(t, r.Parent, "a child of the sweep")
		started[r.Bucket], finished[r.Bucket] = r.Started, r.Finished
	}
	require.Greater(t, len(workers), 1, "the children ran on more than one replica: %v", workers)
	for i := range 10 {
		require.False(t, started["f10"].Before(finished[fmt.Sprintf("f%02d", i)]), "f10 waits for the whole first level")
	}
	require.False(t, started["f11"].Before(finished["f10"]), "f11 waits for f10")
}

// childRun is a bucket-reconcile-bucket run: its bucket and when it ran.
type childRun struct {
	Bucket, Status    string
	Started, Finished time.Time
	// TaskID is its task's external id; Parent that of the sweep that
	// spawned it, "" for a run triggered by name.
	TaskID, Parent string
}

// childRuns lists the bucket-reconcile-bucket runs created since since
// (the tests share one Hatchet: since is when the test's runs began).
func childRuns(t *testing.T, since time.Time) []childRun {
	t.Helper()
	client, err := hatchet.NewClient()
	require.NoError(t, err)
	id := workflowID(t, client, tasks.TaskReconcileBucket)
	var page struct {
		Rows []struct {
			TaskExternalID string         `json:"taskExternalId"`
			Parent         string         `json:"parentTaskExternalId"`
			Status         string         `json:"status"`
			StartedAt      time.Time      `json:"startedAt"`
			FinishedAt     time.Time      `json:"finishedAt"`
			Input          map[string]any `json:"input"`
		} `json:"rows"`
	}
	q := url.Values{"since": {since.UTC().Format(time.RFC3339Nano)}, "only_tasks": {"true"},
		"include_payloads": {"true"}, "workflow_ids": {id.String()}, "limit": {"200"}}
	hatchetAPI(t, "/api/v1/stable/tenants/"+os.Getenv("HATCHET_TENANT_ID")+"/workflow-runs?"+q.Encode(), &page)
	var out []childRun
	for _, r := range page.Rows {
		input, _ := r.Input["input"].(map[string]any)
		if input == nil {
			input = r.Input
		}
		bucket, _ := input["bucketId"].(string)
		out = append(out, childRun{Bucket: bucket, Status: r.Status, Started: r.StartedAt, Finished: r.FinishedAt,
			TaskID: r.TaskExternalID, Parent: r.Parent})
	}
	return out
}

// TestOverlappingSweepsNeverShareABucket starts two sweeps and two sweeps of
// one bucket by name at once on three replicas: the runs of any one bucket
// never overlap.
func TestOverlappingSweepsNeverShareABucket(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	conn, dbURL := dbtest.New(t)
	seedFanout(t, conn, time.Now())
	defsDir := definitions(t, fanoutBuckets())
	recordBackfilled(t, conn, defsDir)
	cancelStraySweeps(t)
	for range 3 {
		startWorker(t, "DATABASE_URL="+dbURL, "DEFINITIONS_DIR="+defsDir)
		time.Sleep(5 * time.Millisecond)
	}
	client, err := hatchet.NewClient()
	require.NoError(t, err)
	began := time.Now()
	var refs []*hatchet.WorkflowRunRef
	for _, run := range []struct {
		task  string
		input any
	}{
		{tasks.TaskReconcile, tasks.ReconcileInput{}},
		{tasks.TaskReconcile, tasks.ReconcileInput{DryRun: true}},
		{tasks.TaskReconcileBucket, tasks.ReconcileBucketInput{BucketID: "f03", DryRun: true}},
		{tasks.TaskReconcileBucket, tasks.ReconcileBucketInput{BucketID: "f03", DryRun: true}},
	} {
		ref, err := client.RunNoWait(ctx, run.task, run.input)
		require.NoError(t, err)
		refs = append(refs, ref)
	}
	for _, ref := range refs {
		_, err := ref.Result()
		require.NoError(t, err)
	}
	runs := childRuns(t, began)
	require.Len(t, runs, 26, "twelve children of each sweep and two by name")
	byBucket := map[string][][2]time.Time{}
	for _, r := range runs {
		require.Equal(t, "COMPLETED", r.Status)
		byBucket[r.Bucket] = append(byBucket[r.Bucket], [2]time.Time{r.Started, r.Finished})
	}
	for bucket, spans := range byBucket {
		sort.Slice(spans, func(i, j int) bool { return spans[i][0].Before(spans[j][0]) })
		for i := 1; i < len(spans); i++ {
			require.False(t, spans[i][0].Before(spans[i-1][1]), "two sweeps of %s at once: %v", bucket, spans)
		}
	}
}

// TestKilledChildIsRetried kills -9 the replica that sweeps a bucket of
// 30 000 leavers after its first chunk of leaves committed: Hatchet runs
// the child again on another replica, which leaves the rest, and every
// leave is emitted once.
func TestKilledChildIsRetried(t *testing.T) {
	const leavers = 30_000
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	conn, dbURL := dbtest.New(t)
	now := time.Now()
	users := dbtest.Users("k", leavers)
	require.NoError(t, dbtest.InsertUserEvents(ctx, conn, dbtest.Events(users, "e2e.k", now.Add(-2*time.Hour))))
	require.NoError(t, dbtest.InsertMemberships(ctx, conn, dbtest.Members(users, "fk", now.Add(-3*time.Hour))))
	defsDir := definitions(t, map[string]string{"fk.yaml": "id: fk\nname: FK\ncriteria: {type: event, eventName: e2e.k, check: exists, within: 1h}\n"})
	var valid struct {
		Buckets []struct {
			CriteriaHash string `json:"criteriaHash"`
		} `json:"buckets"`
	}
	cmd := exec.Command(workerBinary(t), "validate", "--json")
	cmd.Env = append(os.Environ(), "DEFINITIONS_DIR="+defsDir)
	out, err := cmd.Output()
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(out, &valid))
	require.NoError(t, db.SetCriteriaHash(ctx, conn, "fk", valid.Buckets[0].CriteriaHash, now))

	cancelStraySweeps(t)
	// A killed attempt is retried once Hatchet finds its worker gone, or
	// once it times out.
	env := []string{"DATABASE_URL=" + dbURL, "DEFINITIONS_DIR=" + defsDir, "BUCKET_RECONCILE_TIMEOUT=60s"}
	first := startWorker(t, env...)
	client, err := hatchet.NewClient()
	require.NoError(t, err)
	began := time.Now()
	ref, err := client.RunNoWait(ctx, tasks.TaskReconcileBucket, tasks.ReconcileBucketInput{BucketID: "fk"})
	require.NoError(t, err)
	left := func() int {
		var n int
		require.NoError(t, conn.NewRaw("SELECT count(*) FROM bucket_memberships WHERE bucket_id = 'fk' AND status = 'left'").Scan(ctx, &n))
		return n
	}
	require.Eventually(t, func() bool { return left() > 0 }, 2*time.Minute, 20*time.Millisecond, first.Logs())
	require.NoError(t, first.cmd.Process.Kill())
	atKill := left()
	require.Less(t, atKill, leavers, "killed mid-run")
	t.Logf("killed with %d of %d left", atKill, leavers)

	startWorker(t, env...)
	_, err = ref.Result()
	require.NoError(t, err)
	require.Equal(t, leavers, left())
	var events, keys int
	require.NoError(t, conn.NewRaw("SELECT count(*), count(DISTINCT idempotency_key) FROM user_events WHERE event = 'bucket:left:fk'").Scan(ctx, &events, &keys))
	require.Equal(t, leavers, events, "each leave emitted once")
	require.Equal(t, leavers, keys)
	runs := childRuns(t, began)
	require.Len(t, runs, 1)
	require.Equal(t, "COMPLETED", runs[0].Status)
}
