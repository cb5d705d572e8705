package tasks

import (
	"context"
	"fmt"
	"testing"
	"testing/fstest"
	"time"

	"github.com/bucketworker/bucket-worker/tasks/benchreport"
)

// mirrorBucket reads the sweep benchmark's absence bucket: its members are
// dormant's, so each leave of dormant cascades into it.
const mirrorBucket = "id: dormant-mirror\nname: Dormant mirror\ncriteria: {type: bucket, bucketId: dormant, check: member}\n"

// BenchmarkCascade sweeps the benchmark's absence bucket after 35 000 of
// its members (at 1 000 000 users) came back, once with a bucket reading it
// — whose 35 000 memberships the cascade ends in the same transactions —
// and once without, interleaved; the ratio is the cascade's cost, and
// µs/cascaded its cost per cascaded transition (contract §13).
//
//	BUCKET_BENCH=1 go test ./tasks -run '^$' -bench Cascade -benchtime 2x -timeout 60m
func BenchmarkCascade(b *testing.B) {
	p := benchScale(b)
	with := benchDeps(b, p, fstest.MapFS{
		"buckets/dormant.yaml": benchDefinitions["buckets/dormant.yaml"],
		"buckets/mirror.yaml":  {Data: []byte(mirrorBucket)},
	})
	without := benchDeps(b, p, fstest.MapFS{"buckets/dormant.yaml": benchDefinitions["buckets/dormant.yaml"]})
	ctx := context.Background()
	exec := benchExec(b, with.DB)
	exec(`INSERT INTO bucket_memberships (user_id, bucket_id, entered_at, entry_count, source, created_at, updated_at)
		SELECT user_id, 'dormant-mirror', entered_at, 1, 'backfill', created_at, updated_at
		FROM bucket_memberships WHERE bucket_id = 'dormant' AND status = 'active'`)
	b.Cleanup(func() {
		exec("DELETE FROM bucket_memberships WHERE bucket_id = 'dormant-mirror'")
		resetBench(exec)
	})
	resetBench(exec)

	var withTotal, withoutTotal time.Duration
	for i := range b.N {
		for _, isBaseline := range benchreport.Turns(i) {
			d := with
			if isBaseline {
				d = without
			}
			b.StopTimer()
			exec(`INSERT INTO user_events (user_id, event, source, occurred_at)
				SELECT 'u' || i, 'app.active', 'bench', ?::timestamptz - interval '1 hour' FROM generate_series(?, ?) i`,
				benchNow, p.active+1, p.active+p.leavers)
			exec("ANALYZE user_events")
			b.StartTimer()
			bk, _ := d.Buckets.Get("dormant")
			start := time.Now()
			s := &sweep{d: d, b: bk, now: benchNow, rep: BucketSweep{BucketID: bk.ID}}
			if err := s.criteriaLeaves(ctx); err != nil {
				b.Fatal(err)
			}
			took := time.Since(start)
			b.StopTimer()
			wantCascaded := 0
			if d == with {
				withTotal += took
				wantCascaded = p.leavers
			} else {
				withoutTotal += took
			}
			if s.rep.Left != p.leavers || s.rep.Cascaded != wantCascaded {
				b.Fatalf("left %d, cascaded %d; want %d, %d", s.rep.Left, s.rep.Cascaded, p.leavers, wantCascaded)
			}
			resetBench(exec)
			b.StartTimer()
		}
	}
	benchreport.Time(b, withTotal, withoutTotal)
	b.ReportMetric(float64((withTotal-withoutTotal).Microseconds())/float64(b.N*p.leavers), "µs/cascaded")
}

// BenchmarkIngestCascade ingests single events that make a user join
// recent, once where a bucket reads recent (engaged: its pro members) and
// the join cascades into it, and once without, 200 of each in turn per
// iteration; it reports ms per ingest with the dependent, next to without.
//
//	BUCKET_BENCH=1 go test ./tasks -run '^$' -bench IngestCascade -benchtime 10x
func BenchmarkIngestCascade(b *testing.B) {
	const round = 200
	with := newEnv(b, defs{"buckets/recent.yaml": recentBucket, "buckets/engaged.yaml": engagedBucket})
	without := newEnv(b, defs{"buckets/recent.yaml": recentBucket})
	var withTotal, withoutTotal time.Duration
	i := 0
	for n := range b.N {
		for _, isBaseline := range benchreport.Turns(n) {
			e := with
			if isBaseline {
				e = without
			}
			d := e.offline()
			start := time.Now()
			for range round {
				i++
				payload := fmt.Appendf(nil, `{"userId":"u%d","contactProperties":{"plan":"pro"}}`, i)
				out, err := HandleIngest(e.ctx, d, IngestStore, "app.active", payload, "")
				if err != nil {
					b.Fatal(err)
				}
				if want := map[*env]int{with: 2, without: 1}[e]; len(out.Transitions) != want {
					b.Fatalf("%d transitions, want %d", len(out.Transitions), want)
				}
			}
			if e == with {
				withTotal += time.Since(start)
			} else {
				withoutTotal += time.Since(start)
			}
		}
	}
	ingests := float64(b.N * round)
	benchreport.Report(b, "ms/ingest", float64(withTotal.Microseconds())/1000/ingests, float64(withoutTotal.Microseconds())/1000/ingests)
}
