package tasks

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/uptrace/bun"

	"github.com/bucketworker/bucket-worker/db"
	"github.com/bucketworker/bucket-worker/tasks/benchreport"
)

// BenchmarkIngestMetrics ingests single events with the metrics on and
// off, 200 of each in turn per iteration on the same database: the figure
// is events per second with them, the baseline without (contract §16's
// target: ≥ 0.97×).
//
//	BUCKET_BENCH=1 go test ./tasks -run '^$' -bench IngestMetrics -benchtime 20x
func BenchmarkIngestMetrics(b *testing.B) {
	const round = 200
	e := newEnv(b, defs{"buckets/recent.yaml": recentlyActive})
	off := e.offline()
	on := *off
	on.Metrics = NewMetrics(prometheus.NewRegistry(), on.Buckets)
	var with, without time.Duration
	i := 0
	for n := range b.N {
		for _, isBaseline := range benchreport.Turns(n) {
			d := &on
			if isBaseline {
				d = off
			}
			start := time.Now()
			for range round {
				i++
				if _, err := HandleIngest(e.ctx, d, IngestStore, "app.active", fmt.Appendf(nil, `{"userId":"u%d"}`, i), ""); err != nil {
					b.Fatal(err)
				}
			}
			if d.Metrics != nil {
				with += time.Since(start)
			} else {
				without += time.Since(start)
			}
		}
	}
	events := float64(b.N * round)
	benchreport.Report(b, "events/s", events/with.Seconds(), events/without.Seconds())
}

// BenchmarkScrape scrapes the worker's registry — the engine's metrics for
// 100 buckets, the backlog read from the database and Go's runtime — over
// 100 buckets of 10 000 members each; the baseline is the one statement a
// scrape would run to count the members of every bucket, which the size
// gauge avoids. It reports milliseconds per scrape, next to that count's.
//
//	BUCKET_BENCH=1 go test ./tasks -run '^$' -bench Scrape -benchtime 50x
func BenchmarkScrape(b *testing.B) {
	const buckets, members = 100, 10_000
	conn := keptBenchDB(b, "scrape", benchPopulation{users: buckets * members}, func(b testing.TB, conn *bun.DB, p benchPopulation) {
		exec := benchExec(b, conn)
		exec("TRUNCATE bucket_memberships")
		exec(`INSERT INTO bucket_memberships (user_id, bucket_id, status, entered_at, entry_count)
			SELECT 'u' || i, 'b' || (i % ?), 'active', ?::timestamptz - i * interval '1 second', 1
			FROM generate_series(1, ?) i`, buckets, benchNow, p.users)
		exec("VACUUM ANALYZE bucket_memberships")
		exec("CREATE TABLE bench_seeded ()")
	})
	files := fstest.MapFS{}
	for i := range buckets {
		files[fmt.Sprintf("buckets/b%d.yaml", i)] = &fstest.MapFile{Data: fmt.Appendf(nil,
			"id: b%d\nname: B%d\ncriteria: {type: property, property: plan, operator: eq, value: p%d}\n", i, i, i)}
	}
	d := benchDepsOn(b, conn, files)
	registry := prometheus.NewRegistry()
	d.Metrics = NewMetrics(registry, d.Buckets)
	registry.MustRegister(collectors.NewGoCollector(), NewBacklog(d, 5*time.Second))
	ctx := context.Background()
	start := time.Now()
	if err := d.Metrics.Sizes(ctx, d); err != nil {
		b.Fatal(err)
	}
	b.Logf("counting the members at boot: %s", time.Since(start).Round(time.Millisecond))
	handler := promhttp.HandlerFor(registry, promhttp.HandlerOpts{})
	ids := make([]string, 0, buckets)
	for _, bk := range d.Buckets.All() {
		ids = append(ids, bk.ID)
	}

	var scrape, count time.Duration
	for range b.N {
		start := time.Now()
		rec := httptest.NewRecorder()
		handler.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
		scrape += time.Since(start)
		if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), fmt.Sprintf(`bucket_worker_bucket_members{bucket="b7"} %d`, members)) {
			b.Fatalf("scrape: %d\n%.2000s", rec.Code, rec.Body.String())
		}
		start = time.Now()
		sizes, err := db.CountMembers(ctx, d.DB, ids)
		if err != nil || sizes["b7"] != members {
			b.Fatalf("counting: %v %v", sizes["b7"], err)
		}
		count += time.Since(start)
	}
	n := float64(b.N)
	benchreport.Report(b, "ms/scrape", float64(scrape.Microseconds())/1000/n, float64(count.Microseconds())/1000/n)
}
