//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	hatchet "github.com/hatchet-dev/hatchet/sdks/go"
	"github.com/uptrace/bun"

	"github.com/bucketworker/bucket-worker/db/dbtest"
	"github.com/bucketworker/bucket-worker/tasks"
	"github.com/bucketworker/bucket-worker/tasks/benchreport"
)

// fanoutBenchBuckets are twelve buckets on the events of the benchmark
// population (dbtest.Population), in three levels: ten on events, two
// absence buckets among them whose sweeps also join, one reading two of
// those, and one reading that one.
var fanoutBenchBuckets = map[string]string{
	"dormant.yaml":        "{type: event, eventName: app.active, check: not_exists, within: 7d}",
	"lapsed.yaml":         "{type: composite, operator: and, conditions: [{type: event, eventName: app.active, check: exists}, {type: event, eventName: app.active, check: not_exists, within: 14d}]}",
	"power.yaml":          "{type: event, eventName: key.action, check: count, operator: gte, value: 10, within: 30d}",
	"active-today.yaml":   "{type: event, eventName: app.active, check: exists, within: 1d}",
	"active-week.yaml":    "{type: event, eventName: app.active, check: exists, within: 6d}",
	"browsers.yaml":       "{type: event, eventName: page.view, check: count, operator: gte, value: 5, within: 7d}",
	"heavy-browsers.yaml": "{type: event, eventName: page.view, check: count, operator: gte, value: 20, within: 30d}",
	"buyers.yaml":         "{type: event, eventName: purchase, check: exists, within: 30d}",
	"recent-buyers.yaml":  "{type: event, eventName: purchase, check: exists, within: 7d}",
	"repeat-buyers.yaml":  "{type: event, eventName: purchase, check: count, operator: gte, value: 2, within: 60d}",
	"engaged-buyers.yaml": "{type: composite, operator: and, conditions: [{type: bucket, bucketId: buyers, check: member}, {type: bucket, bucketId: active-week, check: member}]}",
	"loyal.yaml":          "{type: composite, operator: and, conditions: [{type: bucket, bucketId: engaged-buyers, check: member}, {type: bucket, bucketId: power, check: not_member}]}",
}

// fanoutBenchOrder is the order their backfills run in: every bucket after
// those it reads.
var fanoutBenchOrder = []string{"dormant", "lapsed", "power", "active-today", "active-week", "browsers",
	"heavy-browsers", "buyers", "recent-buyers", "repeat-buyers", "engaged-buyers", "loyal"}

// BenchmarkSweepFanOut measures the wall time of one sweep of twelve
// buckets over BUCKET_BENCH_USERS users (1 000 000 by default), four ways,
// interleaved in every iteration on the same data:
//
//   - one run: every bucket in turn in one process, as the sweep was one
//     Hatchet run (the reconcile command with a pool of 4, so one bucket
//     at a time) — the baseline;
//   - in process: the reconcile command with the default pool, sweeping
//     independent buckets concurrently;
//   - fan-out on one replica, and on three (the figure): bucket-reconcile
//     through the real Hatchet, a child run per bucket.
//
// The population is relative to the clock, so it is seeded with the clock
// of its first use and seeded again a day later; seeding a million users
// and backfilling the twelve buckets takes about 12 minutes here. Every
// sweep is a steady one: the first, untimed, moves what the clock moved
// since the last run. Run it with
//
//	BUCKET_BENCH=1 go test -tags e2e ./e2e -run '^$' -bench SweepFanOut -benchtime 3x -timeout 90m
func BenchmarkSweepFanOut(b *testing.B) {
	if os.Getenv("BUCKET_BENCH") == "" {
		b.Skip("set BUCKET_BENCH=1 to run the fan-out benchmark")
	}
	ctx := context.Background()
	defsDir := fanoutBenchDefinitions(b)
	_, dbURL := fanoutPopulation(b, defsDir)
	// The replicas keep the default pool, whatever pool scripts/bench
	// gives the ingest benchmarks' workers: the figure is about spreading
	// the sweep, measured as it always was.
	env := []string{"DATABASE_URL=" + dbURL, "DEFINITIONS_DIR=" + defsDir, "DATABASE_MAX_CONNS=20"}
	sweepHere := func(pool int) (tasks.ReconcileOutput, time.Duration) {
		cmd := exec.Command(workerBinary(b), "reconcile", "--json")
		cmd.Env = append(append(os.Environ(), env...), "HATCHET_CLIENT_TOKEN=", "DATABASE_MAX_CONNS="+strconv.Itoa(pool))
		start := time.Now()
		stdout, err := cmd.Output()
		took := time.Since(start)
		if err != nil {
			b.Fatalf("reconcile: %v\n%s", err, stdout)
		}
		var out tasks.ReconcileOutput
		if err := json.Unmarshal(stdout, &out); err != nil {
			b.Fatal(err)
		}
		return out, took
	}
	sweepHere(20) // settles what the clock moved since the population's last use

	cancelStraySweeps(b)
	client, err := hatchet.NewClient()
	if err != nil {
		b.Fatal(err)
	}
	sweepThere := func() (tasks.ReconcileOutput, time.Duration) {
		start := time.Now()
		result, err := client.Run(ctx, tasks.TaskReconcile, tasks.ReconcileInput{})
		took := time.Since(start)
		if err != nil {
			b.Fatal(err)
		}
		var out tasks.ReconcileOutput
		if err := result.TaskOutput(tasks.TaskReconcile).Into(&out); err != nil {
			b.Fatal(err)
		}
		return out, took
	}
	first := startWorker(b, env...)
	defer first.Stop()

	var oneRun, inProcess, fanOut1, fanOut3 time.Duration
	replicasUsed := 0
	for b.Loop() {
		b.StopTimer() // each sweep is timed on its own
		out, took := sweepHere(4)
		checkSweep(b, "one run", out)
		oneRun += took
		out, took = sweepHere(20)
		checkSweep(b, "in process", out)
		inProcess += took
		out, took = sweepThere()
		checkSweep(b, "fan-out on one replica", out)
		fanOut1 += took
		more := []*worker{startWorker(b, env...), startWorker(b, env...)}
		out, took = sweepThere()
		checkSweep(b, "fan-out on three replicas", out)
		fanOut3 += took
		used := map[string]bool{}
		for _, s := range out.Buckets {
			used[s.Worker] = true
		}
		replicasUsed = max(replicasUsed, len(used))
		for _, w := range more {
			w.Stop()
		}
		b.StartTimer()
	}
	n := float64(b.N)
	benchreport.Report(b, "s/run", fanOut3.Seconds()/n, oneRun.Seconds()/n)
	benchreport.ReportFloor(b, "s/run", fanOut3.Seconds()/n, fanOut1.Seconds()/n)
	b.ReportMetric(inProcess.Seconds()/n, "in-process-s")
	b.ReportMetric(float64(replicasUsed), "replicas-used")
}

// checkSweep fails the benchmark when a sweep did not sweep the twelve
// buckets, or one of them failed.
func checkSweep(b *testing.B, how string, out tasks.ReconcileOutput) {
	b.Helper()
	if len(out.Buckets) != len(fanoutBenchBuckets) {
		b.Fatalf("%s swept %d buckets, want %d", how, len(out.Buckets), len(fanoutBenchBuckets))
	}
	for _, s := range out.Buckets {
		if s.Error != "" || s.Skipped != "" {
			b.Fatalf("%s: bucket %s: %s%s", how, s.BucketID, s.Error, s.Skipped)
		}
	}
}

// fanoutBenchDefinitions writes the twelve buckets' definitions.
func fanoutBenchDefinitions(b *testing.B) string {
	files := map[string]string{}
	for file, criteria := range fanoutBenchBuckets {
		id := file[:len(file)-len(".yaml")]
		files[file] = fmt.Sprintf("id: %s\nname: %s\ncriteria: %s\n", id, id, criteria)
	}
	return definitions(b, files)
}

// fanoutPopulation opens the kept database of the fan-out benchmark,
// seeded with dbtest.Population at the clock of its seeding (40% active
// and 2% power users), and its twelve buckets backfilled. A population
// seeded more than a day ago is seeded again: its events have aged out of
// the windows the buckets read.
func fanoutPopulation(b *testing.B, defsDir string) (*bun.DB, string) {
	ctx := context.Background()
	users := dbtest.BenchUsers(b)
	conn, dbURL, _ := dbtest.Kept(b, fmt.Sprintf("bw_bench_fanout_%d", users))
	var seededAt []time.Time
	_ = conn.NewRaw("SELECT seeded_at FROM bench_seeded").Scan(ctx, &seededAt)
	if len(seededAt) == 1 && time.Since(seededAt[0]) < 24*time.Hour {
		return conn, dbURL
	}
	start := time.Now()
	if _, err := conn.NewRaw("DROP TABLE IF EXISTS bench_seeded").Exec(ctx); err != nil {
		b.Fatal(err)
	}
	dbtest.SeedPopulation(b, conn, dbtest.NewPopulation(users, start))
	seeded := time.Since(start)
	for _, id := range fanoutBenchOrder {
		cmd := exec.Command(workerBinary(b), "backfill", "--bucket", id, "--json")
		cmd.Env = append(os.Environ(), "DATABASE_URL="+dbURL, "DEFINITIONS_DIR="+defsDir, "HATCHET_CLIENT_TOKEN=")
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("backfilling %s: %v\n%s", id, err, out)
		}
	}
	if _, err := conn.NewRaw("CREATE TABLE bench_seeded AS SELECT ?::timestamptz AS seeded_at", start).Exec(ctx); err != nil {
		b.Fatal(err)
	}
	b.Logf("seeded %d users in %s, backfilled twelve buckets in %s", users, seeded.Round(time.Second),
		(time.Since(start) - seeded).Round(time.Second))
	return conn, dbURL
}
