//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	v0 "github.com/hatchet-dev/hatchet/pkg/client"
	hatchet "github.com/hatchet-dev/hatchet/sdks/go"
	"github.com/uptrace/bun"

	"github.com/bucketworker/bucket-worker/tasks"
	"github.com/bucketworker/bucket-worker/tasks/benchreport"
)

// BenchmarkIngestBatch measures batched ingest (contract §7.1) end to end
// — from the push of a batch to its events' committed joins — next to a
// no-op task fed one event per run on the same Hatchet server:
//
//   - batch=100, batch=500: BUCKET_BENCH_BATCH_EVENTS events (20 000 by
//     default) pushed at once in batches of that size, events per second
//     from the first push to the last commit, p50/p99 from push to commit,
//     and how long the pushes took (push-s);
//   - offered=1000/s: a batch of 100 every 100 ms for
//     BUCKET_BENCH_OFFERED_SECONDS (60 by default), p50/p99 from push to
//     commit, and the rate it kept up.
//
// Every event makes a new user join, so each one commits a transition and
// its push of bucket:entered, which Hatchet ingests too. The database
// holds 100 000 earlier users with their events and statistics. Run it with
//
//	BUCKET_BENCH=1 go test -tags e2e ./e2e -run '^$' -bench IngestBatch -benchtime 1x -timeout 60m
func BenchmarkIngestBatch(b *testing.B) {
	conn, dbURL, client := benchSetup(b, "batched ingest")
	n := envInt("BUCKET_BENCH_BATCH_EVENTS", 20_000)
	offeredSeconds := envInt("BUCKET_BENCH_OFFERED_SECONDS", 60)
	ctx := context.Background()
	// A live deployment's tables have rows and statistics; a database
	// filled from empty within seconds has neither, and the planner then
	// hashes whole tables for each batch until autovacuum analyzes them.
	for _, stmt := range []string{
		"INSERT INTO contacts (external_id, properties) SELECT 'earlier-' || i, '{}' FROM generate_series(1, 100000) i",
		`INSERT INTO user_events (user_id, event, occurred_at, source)
			SELECT 'earlier-' || i, 'bench.ingest', now() - k * interval '1 day', 'ingest' FROM generate_series(1, 100000) i, generate_series(1, 5) k`,
		`INSERT INTO bucket_memberships (user_id, bucket_id, status, entered_at, left_at)
			SELECT 'earlier-' || i, 'bench-ingest', 'left', now() - interval '5 days', now() - interval '4 days' FROM generate_series(1, 100000) i`,
		"VACUUM ANALYZE contacts, user_events, bucket_memberships",
	} {
		if _, err := conn.ExecContext(ctx, stmt); err != nil {
			b.Fatal(err)
		}
	}

	// The baseline, once for all: a no-op task, one event per run.
	const noopEvents = 2000
	run := strconv.FormatInt(time.Now().UnixNano(), 36)
	noop := noopTask.rate(b, client, noopEvents, func() []time.Time {
		pushed, err := pushSingles(client, noopTask.key, "noop-"+run+"-", noopEvents)
		if err != nil {
			b.Fatal(err)
		}
		return pushed
	})
	startWorker(b, "DATABASE_URL="+dbURL, "DEFINITIONS_DIR="+benchIngestDefinitions(b))
	time.Sleep(2 * time.Second)

	for _, size := range []int{100, 500} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			for i := range b.N {
				prefix := fmt.Sprintf("%s-b%d-%d-", run, size, i)
				// The burst is pushed at once: one bulk push per ten
				// batches, all in flight together, as a producer's many
				// request handlers would. Pushed one after another, the
				// pushes themselves took the whole run.
				start := time.Now()
				pushed := make([]time.Time, n)
				var wg sync.WaitGroup
				for from := 0; from < n; from += 10 * size {
					wg.Go(func() {
						at, err := pushBatches(client, prefix, from, min(from+10*size, n), size)
						if err != nil {
							b.Error(err)
						}
						copy(pushed[from:], at)
					})
				}
				wg.Wait()
				if b.Failed() {
					return
				}
				pushSpan := time.Since(start)
				end := waitFor(b, "batched ingest", n, func() int { return joined(ctx, conn, prefix) })
				storedOnce(b, ctx, conn, prefix, n)
				benchreport.Report(b, "events/s", float64(n)/end.Sub(start).Seconds(), noop)
				b.ReportMetric(pushSpan.Seconds(), "push-s")
				reportLatencies(b, latencies(b, ctx, conn, prefix, pushed))
			}
		})
	}

	b.Run("offered=1000/s", func(b *testing.B) {
		const size, batchesPerSecond = 100, 10
		total := offeredSeconds * size * batchesPerSecond
		for i := range b.N {
			prefix := fmt.Sprintf("%s-o%d-", run, i)
			// Each batch is pushed on its own schedule, so that a slow push
			// delays no other.
			pushed := make([]time.Time, total)
			atRate(batchesPerSecond, total/size, func(k int) {
				start := k * size
				at, err := pushBatches(client, prefix, start, start+size, size)
				if err != nil {
					b.Error(err)
				}
				copy(pushed[start:], at)
			})
			if b.Failed() {
				return
			}
			end := waitFor(b, "offered ingest", total, func() int { return joined(ctx, conn, prefix) })
			storedOnce(b, ctx, conn, prefix, total)
			benchreport.Report(b, "events/s", float64(total)/end.Sub(pushed[0]).Seconds(), noop)
			reportLatencies(b, latencies(b, ctx, conn, prefix, pushed))
		}
	})
}

// pushBatches pushes the events start..end-1 of users prefix<i> in one bulk
// push of batches of size, and returns when each was pushed.
func pushBatches(client *hatchet.Client, prefix string, start, end, size int) ([]time.Time, error) {
	var pushes []v0.EventWithAdditionalMetadata
	for from := start; from < end; from += size {
		events := make([]map[string]any, 0, size)
		for i := from; i < min(from+size, end); i++ {
			events = append(events, map[string]any{"event": "bench.ingest", "userId": fmt.Sprintf("%s%d", prefix, i)})
		}
		pushes = append(pushes, v0.EventWithAdditionalMetadata{Key: tasks.DefaultBatchEvent, Event: map[string]any{"events": events}})
	}
	sent := time.Now()
	if err := client.Events().BulkPush(context.Background(), pushes); err != nil {
		return nil, fmt.Errorf("pushing batches of events %d to %d: %w", start, end, err)
	}
	at := make([]time.Time, end-start)
	for i := range at {
		at[i] = sent
	}
	return at, nil
}

// joined counts the users of the prefix who joined the bench bucket.
func joined(ctx context.Context, conn *bun.DB, prefix string) int {
	var c int
	_ = conn.NewRaw("SELECT count(*) FROM bucket_memberships WHERE bucket_id = 'bench-ingest' AND user_id LIKE ?", prefix+"%").Scan(ctx, &c)
	return c
}

// latencies are, for each user of the prefix, the time from the push of
// its event (pushed, by user index) to its committed join.
func latencies(b *testing.B, ctx context.Context, conn *bun.DB, prefix string, pushed []time.Time) []time.Duration {
	b.Helper()
	var rows []struct {
		UserID    string    `bun:"user_id"`
		EnteredAt time.Time `bun:"entered_at"`
	}
	if err := conn.NewRaw("SELECT user_id, entered_at FROM bucket_memberships WHERE bucket_id = 'bench-ingest' AND user_id LIKE ?", prefix+"%").Scan(ctx, &rows); err != nil {
		b.Fatal(err)
	}
	out := make([]time.Duration, 0, len(rows))
	for _, r := range rows {
		i, err := strconv.Atoi(strings.TrimPrefix(r.UserID, prefix))
		if err != nil {
			b.Fatal(err)
		}
		out = append(out, r.EnteredAt.Sub(pushed[i]))
	}
	return out
}

func envInt(key string, fallback int) int {
	if v, err := strconv.Atoi(os.Getenv(key)); err == nil && v > 0 {
		return v
	}
	return fallback
}
