package tasks

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bucketworker/bucket-worker/tasks/benchreport"
)

// BenchmarkIngestInProcess is the database side of one bucket-ingest run
// in store mode that makes a new user join (no Hatchet): contact upsert,
// event, evaluation, membership, transition event and outbox row.
func BenchmarkIngestInProcess(b *testing.B) {
	e := newEnv(b, defs{"buckets/recent.yaml": recentlyActive})
	e.deps = e.offline()
	i := 0
	for b.Loop() {
		i++
		if _, err := HandleIngest(e.ctx, e.deps, IngestStore, "app.active", []byte(fmt.Sprintf(`{"userId":"u%d"}`, i)), ""); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkIngestBatchInProcess ingests 2 000 events of 200 users (each
// user's first event makes them join) as batches of 100 and of 500, next
// to the same events ingested one by one in the same run; it reports
// events per second (no Hatchet: the database side of the runs).
func BenchmarkIngestBatchInProcess(b *testing.B) {
	const users, perUser = 200, 10
	for _, size := range []int{100, 500} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			var batched, single time.Duration
			round := 0
			for range b.N {
				round++
				events := make([]string, 0, users*perUser)
				for i := range users * perUser {
					events = append(events, fmt.Sprintf(`{"event":"app.active","userId":"r%d-u%d"}`, round, i%users))
				}
				e := newEnv(b, defs{"buckets/recent.yaml": recentlyActive})
				e.deps = e.offline()
				start := time.Now()
				for chunk := range slices.Chunk(events, size) {
					if _, err := HandleBatch(e.ctx, e.deps, IngestStore, []byte(`{"events":[`+strings.Join(chunk, ",")+`]}`), ""); err != nil {
						b.Fatal(err)
					}
				}
				batched += time.Since(start)
				e = newEnv(b, defs{"buckets/recent.yaml": recentlyActive})
				e.deps = e.offline()
				start = time.Now()
				for _, ev := range events {
					if _, err := HandleIngest(e.ctx, e.deps, IngestStore, "app.active", []byte(ev), ""); err != nil {
						b.Fatal(err)
					}
				}
				single += time.Since(start)
			}
			n := float64(b.N * users * perUser)
			benchreport.Report(b, "events/s", n/batched.Seconds(), n/single.Seconds())
		})
	}
}
