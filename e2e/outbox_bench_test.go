//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bucketworker/bucket-worker/db"
	"github.com/bucketworker/bucket-worker/db/dbtest"
	"github.com/bucketworker/bucket-worker/tasks"
)

// BenchmarkOutboxUnderArms: a first-time backfill of a fastExpiry bucket
// arms 10 000 timers at once, whose arm pushes each start a bucket-expiry
// run, and 2 000 single events that each make a user join are pushed while
// the outbox sends them. It reports the seconds from the worker's start
// until the outbox is empty, the most times Hatchet took one key (arms and
// joins), and p50/p99 from push to committed join of the single events.
// Run it with
//
//	BUCKET_BENCH=1 go test -tags e2e ./e2e -run '^$' -bench OutboxUnderArms -benchtime 1x -timeout 30m
func BenchmarkOutboxUnderArms(b *testing.B) {
	const timers, singles = 10_000, 2_000
	conn, dbURL, client := benchSetup(b, "outbox under arms")
	ctx := context.Background()
	for range b.N {
		run := strconv.FormatInt(time.Now().UnixNano(), 36)
		users := dbtest.Users("armed-"+run+"-", timers)
		if err := dbtest.InsertContacts(ctx, conn, dbtest.Contacts(users, `{}`)); err != nil {
			b.Fatal(err)
		}
		if err := dbtest.InsertUserEvents(ctx, conn, dbtest.Events(users, "bench.seen", time.Now())); err != nil {
			b.Fatal(err)
		}
		defsDir := definitions(b, map[string]string{
			"bench-armed.yaml": "id: bench-armed\nname: Bench armed\nfastExpiry: true\n" +
				"criteria: {type: event, eventName: bench.seen, check: exists, within: 1h}\n",
			"bench-ingest.yaml": "id: bench-ingest\nname: Bench ingest\n" +
				"criteria: {type: event, eventName: bench.ingest, check: exists, within: 1h}\n",
		})
		pending := func() int {
			s, err := db.SummarizeOutbox(ctx, conn, 0)
			if err != nil {
				b.Fatal(err)
			}
			return s.Pending
		}
		start := time.Now()
		w := startWorker(b, "DATABASE_URL="+dbURL, "DEFINITIONS_DIR="+defsDir, "LOG_LEVEL=debug")
		// Once the backfill has armed the timers, the singles arrive
		// while the arms go out.
		waitFor(b, "arms enqueued", 1, func() int {
			var n int
			_ = conn.NewRaw("SELECT count(*) FROM bucket_event_outbox WHERE event_key = ?", tasks.ArmExpiryEvent).Scan(ctx, &n)
			return min(n/timers, 1)
		})
		prefix := "single-" + run + "-"
		// One push per event, from eight producers at once: a bulk push of
		// 1 000 times out on a Hatchet this busy.
		pushed := make([]time.Time, singles)
		var wg sync.WaitGroup
		var failed atomic.Int64
		for p := range 8 {
			wg.Go(func() {
				for i := p; i < singles; i += 8 {
					pushed[i] = time.Now()
					if err := client.Events().Push(ctx, "bench.ingest", map[string]any{"userId": fmt.Sprintf("%s%d", prefix, i)}); err != nil {
						failed.Add(1)
					}
				}
			})
		}
		wg.Wait()
		if failed.Load() > 0 {
			b.Fatalf("%d of %d pushes failed", failed.Load(), singles)
		}
		waitFor(b, "singles joined", singles, func() int { return joined(ctx, conn, prefix) })
		lat := latencies(b, ctx, conn, prefix, pushed)
		empty := waitFor(b, "outbox empty", 1, func() int { return map[bool]int{true: 1}[pending() == 0] })
		_ = w.cmd.Process.Kill()

		most := 0
		for _, key := range []string{tasks.ArmExpiryEvent, "bucket:entered:bench-ingest"} {
			byTimes := map[int]int{}
			for _, n := range pushedEvents(b, os.Getenv("HATCHET_API_URL"), os.Getenv("HATCHET_CLIENT_TOKEN"), os.Getenv("HATCHET_TENANT_ID"), key) {
				most = max(most, n)
				byTimes[n]++
			}
			b.Logf("%s: keys by times Hatchet took them: %v", key, byTimes)
		}
		for _, line := range strings.Split(w.Logs(), "\n") {
			if strings.Contains(line, "push") || strings.Contains(line, "outbox") {
				b.Log(line)
			}
		}
		b.ReportMetric(empty.Sub(start).Seconds(), "s-to-empty")
		b.ReportMetric(float64(most), "max-takes-per-key")
		reportLatencies(b, lat)
	}
}
