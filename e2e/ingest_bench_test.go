//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	v0 "github.com/hatchet-dev/hatchet/pkg/client"
	hatchet "github.com/hatchet-dev/hatchet/sdks/go"
	"github.com/uptrace/bun"

	"github.com/bucketworker/bucket-worker/db/dbtest"
	"github.com/bucketworker/bucket-worker/tasks/benchreport"
)

// BenchmarkIngest measures bucket-ingest end to end — from the push to the
// committed join — next to two baselines triggered by the same pushes on
// the same Hatchet server: a no-op task, and a no-op task that pushes one
// event per run, as every ingest that makes a user join pushes its
// bucket:entered (the floor of this design on Hatchet). It reports events
// per second for all three, both ratios, and the p50/p99 latency from
// push to committed join. Every event makes a new user join.
//
// The baselines run before the ingest and again after it, in mirrored
// order (no-op, floor, ingest, floor, no-op), and each baseline's rate is
// that of its two legs together: Hatchet's pace drifts over a benchmark
// (on 2026-12-05 both baselines were 10–28% faster after the ingest than
// before it), and a baseline measured only on one side of the ingest
// would carry the drift into the ratio. Run it with
//
//	BUCKET_BENCH=1 go test -tags e2e ./e2e -run '^$' -bench Ingest -benchtime 1x -timeout 30m
//
// BUCKET_BENCH_EVENTS sets the number of events (2 000 by default).
func BenchmarkIngest(b *testing.B) {
	conn, dbURL, client := benchSetup(b, "ingest")
	n := envInt("BUCKET_BENCH_EVENTS", 2000)
	ctx := context.Background()
	pushAll := func(key, prefix string) []time.Time {
		pushed, err := pushSingles(client, key, prefix, n)
		if err != nil {
			b.Fatal(err)
		}
		return pushed
	}
	for range b.N {
		run := strconv.FormatInt(time.Now().UnixNano(), 36)
		noop := func(leg string) float64 {
			return noopRate(b, client, n, func() []time.Time { return pushAll("bench.noop", "noop-"+leg+run+"-") })
		}
		floor := func(leg string) float64 {
			return noopPushRate(b, client, n, func() []time.Time { return pushAll("bench.noop-push", "floor-"+leg+run+"-") })
		}
		noopBefore := noop("a")
		floorBefore := floor("a")

		// The worker ingesting a bucket that every such event joins.
		env := []string{"DATABASE_URL=" + dbURL, "DEFINITIONS_DIR=" + benchIngestDefinitions(b)}
		profiles := os.Getenv("BUCKET_BENCH_PROFILES")
		if profiles != "" {
			env = append(env, "PPROF_ADDR="+profileAddr)
		}
		w := startWorker(b, env...)
		time.Sleep(2 * time.Second)
		prefix := "ing-" + run + "-"
		var profiled sync.WaitGroup
		if profiles != "" {
			profiled.Go(func() { saveProfile(b, profiles, "ingest-cpu.pprof", "profile?seconds=15") })
		}
		pushed := pushAll("bench.ingest", prefix)
		ingestEnd := waitFor(b, "ingest", n, func() int { return joined(ctx, conn, prefix) })
		if profiles != "" {
			profiled.Wait()
			saveProfile(b, profiles, "ingest-block.pprof", "block")
			saveProfile(b, profiles, "ingest-mutex.pprof", "mutex")
		}
		ingestRate := float64(n) / ingestEnd.Sub(pushed[0]).Seconds()
		storedOnce(b, ctx, conn, prefix, n)
		lat := latencies(b, ctx, conn, prefix, pushed)
		_ = w.cmd.Process.Kill()
		floorAfter := floor("b")
		noopAfter := noop("b")
		b.Logf("no-op %.1f then %.1f events/s; floor %.1f then %.1f; ingest %.1f between", noopBefore, noopAfter, floorBefore, floorAfter, ingestRate)

		benchreport.Report(b, "events/s", ingestRate, bothLegs(noopBefore, noopAfter))
		benchreport.ReportFloor(b, "events/s", ingestRate, bothLegs(floorBefore, floorAfter))
		reportLatencies(b, lat)
	}
}

// BenchmarkIngestAtHalfRate offers single pushes, each of which makes a
// user join, at half the rate a no-op task keeps up with on the same
// Hatchet (measured first, BUCKET_BENCH_EVENTS pushes), for
// BUCKET_BENCH_OFFERED_SECONDS (30 by default), and reports the rate kept
// against the rate offered and the p50/p99 from push to committed join.
// Run it with
//
//	BUCKET_BENCH=1 go test -tags e2e ./e2e -run '^$' -bench IngestAtHalfRate -benchtime 1x -timeout 30m
func BenchmarkIngestAtHalfRate(b *testing.B) {
	conn, dbURL, client := benchSetup(b, "ingest at half rate")
	n := envInt("BUCKET_BENCH_EVENTS", 2000)
	seconds := envInt("BUCKET_BENCH_OFFERED_SECONDS", 30)
	ctx := context.Background()
	for range b.N {
		run := strconv.FormatInt(time.Now().UnixNano(), 36)
		noop := noopRate(b, client, n, func() []time.Time {
			pushed, err := pushSingles(client, "bench.noop", "noop-"+run+"-", n)
			if err != nil {
				b.Fatal(err)
			}
			return pushed
		})
		offered := noop / 2
		w := startWorker(b, "DATABASE_URL="+dbURL, "DEFINITIONS_DIR="+benchIngestDefinitions(b))
		time.Sleep(2 * time.Second)
		prefix := "half-" + run + "-"
		total := int(offered * float64(seconds))
		pushed := make([]time.Time, total)
		every := time.Duration(float64(time.Second) / offered)
		tick := time.NewTicker(every)
		var wg sync.WaitGroup
		for i := range total {
			wg.Go(func() {
				pushed[i] = time.Now()
				if err := client.Events().Push(ctx, "bench.ingest", map[string]any{"userId": fmt.Sprintf("%s%d", prefix, i)}); err != nil {
					b.Error(err)
				}
			})
			<-tick.C
		}
		tick.Stop()
		wg.Wait()
		if b.Failed() {
			return
		}
		end := waitFor(b, "ingest at half rate", total, func() int { return joined(ctx, conn, prefix) })
		storedOnce(b, ctx, conn, prefix, total)
		_ = w.cmd.Process.Kill()
		benchreport.Report(b, "events/s", float64(total)/end.Sub(pushed[0]).Seconds(), offered)
		reportLatencies(b, latencies(b, ctx, conn, prefix, pushed))
	}
}

// benchSetup is what the end-to-end benchmarks start from: skipped unless
// BUCKET_BENCH is set, a database of their own and a Hatchet client.
func benchSetup(b *testing.B, what string) (*bun.DB, string, *hatchet.Client) {
	b.Helper()
	if os.Getenv("BUCKET_BENCH") == "" {
		b.Skipf("set BUCKET_BENCH=1 to run the %s benchmark", what)
	}
	conn, dbURL := dbtest.New(b)
	client, err := hatchet.NewClient()
	if err != nil {
		b.Fatal(err)
	}
	return conn, dbURL, client
}

// benchIngestDefinitions is a definitions folder with the bucket every
// bench.ingest event joins.
func benchIngestDefinitions(b *testing.B) string {
	return definitions(b, map[string]string{"bench-ingest.yaml": "id: bench-ingest\nname: Bench ingest\n" +
		"criteria: {type: event, eventName: bench.ingest, check: exists, within: 1h}\n"})
}

// singlesPerPush is how many single events one bulk push of the ingest
// benchmarks carries. Hatchet creates each event's run inside the push,
// and a push it takes longer than 30 s over is sent again by the SDK and
// taken again: Hatchet keeps no idempotency for events. On the loaded
// Hatchet of a full scripts/bench run a push of 1 000 took 20–34 s, and
// 2 000 pushed events were stored 7 000 times.
const singlesPerPush = 100

// pushSingles pushes n events of the key, one for each user prefix<i>, in
// bulk pushes of singlesPerPush, and returns when each was pushed, by
// index.
func pushSingles(client *hatchet.Client, key, prefix string, n int) ([]time.Time, error) {
	at := make([]time.Time, n)
	for start := 0; start < n; start += singlesPerPush {
		end := min(start+singlesPerPush, n)
		batch := make([]v0.EventWithAdditionalMetadata, 0, end-start)
		for i := start; i < end; i++ {
			batch = append(batch, v0.EventWithAdditionalMetadata{Key: key,
				Event: map[string]any{"userId": fmt.Sprintf("%s%d", prefix, i)}})
		}
		sent := time.Now()
		if err := client.Events().BulkPush(context.Background(), batch); err != nil {
			return nil, fmt.Errorf("pushing events %d to %d: %w", start, end, err)
		}
		for i := start; i < end; i++ {
			at[i] = sent
		}
	}
	return at, nil
}

// storedOnce fails the benchmark unless the worker stored exactly n
// bench.ingest events of the prefix: an event Hatchet took twice (a push
// sent again, see singlesPerPush) is work the rate does not count.
func storedOnce(b *testing.B, ctx context.Context, conn *bun.DB, prefix string, n int) {
	b.Helper()
	var stored int
	if err := conn.NewRaw("SELECT count(*) FROM user_events WHERE event = 'bench.ingest' AND user_id LIKE ?", prefix+"%").Scan(ctx, &stored); err != nil {
		b.Fatal(err)
	}
	if stored != n {
		b.Fatalf("the worker stored %d events for the %d pushed: Hatchet took some twice, and the rate is not that of %d", stored, n, n)
	}
}

// runsByUser counts the distinct users of the runs of a baseline task: an
// event Hatchet took twice runs twice, and must not make the baseline
// faster.
type runsByUser struct {
	seen sync.Map
	n    atomic.Int64
}

// ran records a run for the user of the input.
func (u *runsByUser) ran(in map[string]any) {
	if _, again := u.seen.LoadOrStore(in["userId"], true); !again {
		u.n.Add(1)
	}
}

func (u *runsByUser) count() int { return int(u.n.Load()) }

// noopRate is the baseline of the ingest benchmarks: the events per second
// of a no-op task on the same Hatchet server, triggered by one event per
// run, from the first push to the n-th run. push pushes the n events of
// key bench.noop and returns when each was pushed.
func noopRate(b *testing.B, client *hatchet.Client, n int, push func() []time.Time) float64 {
	b.Helper()
	var noops runsByUser
	noop := client.NewStandaloneTask("bench-noop", func(ctx hatchet.Context, in map[string]any) (any, error) {
		noops.ran(in)
		return nil, nil
	}, hatchet.WithWorkflowEvents("bench.noop"))
	nw, err := client.NewWorker("bench-noop-worker", hatchet.WithWorkflows(noop), hatchet.WithLogger(sdkLogger))
	if err != nil {
		b.Fatal(err)
	}
	stop, err := nw.Start()
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = stop() }()
	time.Sleep(2 * time.Second)
	pushed := push()
	end := waitFor(b, "no-op task", n, noops.count)
	return float64(n) / end.Sub(pushed[0]).Seconds()
}

// bothLegs is the rate of two legs of the same number of events, taken at
// rates r1 and r2: all their events over all their time.
func bothLegs(r1, r2 float64) float64 {
	return 2 / (1/r1 + 1/r2)
}

// profileAddr is where a profiled benchmark's worker serves its profiles.
const profileAddr = "127.0.0.1:6061"

// saveProfile fetches a profile of the worker into dir.
func saveProfile(b *testing.B, dir, name, path string) {
	b.Helper()
	resp, err := http.Get("http://" + profileAddr + "/debug/pprof/" + path)
	if err != nil {
		b.Errorf("fetching the %s profile: %v", path, err)
		return
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err == nil {
		err = os.WriteFile(filepath.Join(dir, name), data, 0o644)
	}
	if err != nil {
		b.Errorf("saving the %s profile: %v", path, err)
	}
}

// noopPushRate is the second baseline of the ingest benchmarks: noopRate
// for a no-op task that pushes one event per run, after the run's work, as
// the outbox pushes an ingest's bucket:entered. push pushes the n events
// of key bench.noop-push and returns when each was pushed.
func noopPushRate(b *testing.B, client *hatchet.Client, n int, push func() []time.Time) float64 {
	b.Helper()
	var runs runsByUser
	task := client.NewStandaloneTask("bench-noop-push", func(ctx hatchet.Context, in map[string]any) (any, error) {
		err := client.Events().Push(ctx, "bench.noop-pushed", map[string]any{"userId": in["userId"]})
		runs.ran(in)
		return nil, err
	}, hatchet.WithWorkflowEvents("bench.noop-push"))
	nw, err := client.NewWorker("bench-noop-push-worker", hatchet.WithWorkflows(task), hatchet.WithLogger(sdkLogger))
	if err != nil {
		b.Fatal(err)
	}
	stop, err := nw.Start()
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = stop() }()
	time.Sleep(2 * time.Second)
	pushed := push()
	end := waitFor(b, "no-op task that pushes", n, runs.count)
	return float64(n) / end.Sub(pushed[0]).Seconds()
}

// waitPoll is how often waitFor asks. A count of the worker's rows scans
// them, in the database being measured: asked every 20 ms, one batched
// run counted 152 times, 9.9 s in all; every 100 ms, 80 times and 7.2 s.
// A side is found done at most 100 ms late, the baselines, polled the same
// way, as much.
const waitPoll = 100 * time.Millisecond

// waitFor polls done until it reaches n and returns when it did.
func waitFor(b *testing.B, what string, n int, done func() int) time.Time {
	b.Helper()
	deadline := time.Now().Add(10 * time.Minute)
	for done() < n {
		if time.Now().After(deadline) {
			b.Fatalf("%s: %d of %d after 10 minutes", what, done(), n)
		}
		time.Sleep(waitPoll)
	}
	return time.Now()
}

// reportLatencies reports the p50 and p99 of the latencies.
func reportLatencies(b *testing.B, latencies []time.Duration) {
	slices.Sort(latencies)
	b.ReportMetric(float64(latencies[len(latencies)/2].Milliseconds()), "p50-ms")
	b.ReportMetric(float64(latencies[len(latencies)*99/100].Milliseconds()), "p99-ms")
}
