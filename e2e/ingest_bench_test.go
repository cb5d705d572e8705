//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
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
// committed join — next to a no-op task triggered by the same pushes on the
// same Hatchet server: events per second for both, their ratio, and the
// p50/p99 latency from push to committed join. Every event makes a new
// user join. Run it with
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
		noopRate := noopRate(b, client, n, func() []time.Time { return pushAll("bench.noop", "noop-"+run+"-") })

		// The worker ingesting a bucket that every such event joins.
		w := startWorker(b, "DATABASE_URL="+dbURL, "DEFINITIONS_DIR="+benchIngestDefinitions(b))
		time.Sleep(2 * time.Second)
		prefix := "ing-" + run + "-"
		pushed := pushAll("bench.ingest", prefix)
		ingestEnd := waitFor(b, "ingest", n, func() int { return joined(ctx, conn, prefix) })
		ingestRate := float64(n) / ingestEnd.Sub(pushed[0]).Seconds()
		lat := latencies(b, ctx, conn, prefix, pushed)
		_ = w.cmd.Process.Kill()

		benchreport.Report(b, "events/s", ingestRate, noopRate)
		reportLatencies(b, lat)
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

// pushSingles pushes n events of the key, one for each user prefix<i>, in
// bulk pushes of 1 000, and returns when each was pushed, by index.
func pushSingles(client *hatchet.Client, key, prefix string, n int) ([]time.Time, error) {
	at := make([]time.Time, n)
	for start := 0; start < n; start += 1000 {
		end := min(start+1000, n)
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

// noopRate is the baseline of the ingest benchmarks: the events per second
// of a no-op task on the same Hatchet server, triggered by one event per
// run, from the first push to the n-th run. push pushes the n events of
// key bench.noop and returns when each was pushed.
func noopRate(b *testing.B, client *hatchet.Client, n int, push func() []time.Time) float64 {
	b.Helper()
	var noops atomic.Int64
	noop := client.NewStandaloneTask("bench-noop", func(ctx hatchet.Context, in map[string]any) (any, error) {
		noops.Add(1)
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
	end := waitFor(b, "no-op task", n, func() int { return int(noops.Load()) })
	return float64(n) / end.Sub(pushed[0]).Seconds()
}

// waitFor polls done until it reaches n and returns when it did.
func waitFor(b *testing.B, what string, n int, done func() int) time.Time {
	b.Helper()
	deadline := time.Now().Add(10 * time.Minute)
	for done() < n {
		if time.Now().After(deadline) {
			b.Fatalf("%s: %d of %d after 10 minutes", what, done(), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Now()
}

// reportLatencies reports the p50 and p99 of the latencies.
func reportLatencies(b *testing.B, latencies []time.Duration) {
	slices.Sort(latencies)
	b.ReportMetric(float64(latencies[len(latencies)/2].Milliseconds()), "p50-ms")
	b.ReportMetric(float64(latencies[len(latencies)*99/100].Milliseconds()), "p99-ms")
}
