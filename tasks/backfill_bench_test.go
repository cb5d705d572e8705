package tasks

import (
	"context"
	"testing"
	"time"

	"github.com/bucketworker/bucket-worker/tasks/benchreport"
)

// rawMatchers is the baseline of a first-time backfill: one INSERT … SELECT
// of the matchers of a benchmark bucket, the same set-based matcher SQL
// written by hand, with the epoch, expires_at and the everFired floor.
func rawMatchers(ctx context.Context, d *Deps, bucketID string, now time.Time) (int, error) {
	match := map[string]string{
		"dormant": `EXISTS (SELECT 1 FROM user_events AS f WHERE f.user_id = c.external_id AND f.event = 'app.active')
			AND NOT EXISTS (SELECT 1 FROM user_events AS e WHERE e.user_id = c.external_id AND e.event = 'app.active' AND e.occurred_at >= ?2)`,
		"power": `(SELECT count(*) FROM user_events AS e WHERE e.user_id = c.external_id AND e.event = 'key.action' AND e.occurred_at >= ?3) >= 10`,
	}[bucketID]
	window := map[string]time.Duration{"dormant": 7 * 24 * time.Hour, "power": 30 * 24 * time.Hour}[bucketID]
	res, err := d.DB.NewRaw(`
		INSERT INTO bucket_memberships AS m (user_id, user_email, bucket_id, status, entered_at, expires_at,
			last_evaluated_at, entry_count, source, created_at, updated_at)
		SELECT c.external_id, nullif(lower(btrim(c.email)), ''), ?0, 'active', ?1, ?4, ?1,
			1 + (SELECT count(*) FILTER (WHERE p.bucket_id = ?0) FROM bucket_memberships AS p WHERE p.user_id = c.external_id),
			'backfill', ?1, ?1
		FROM contacts AS c
		WHERE c.deleted_at IS NULL AND c.external_id IS NOT NULL AND `+match+`
		AND NOT EXISTS (SELECT 1 FROM bucket_memberships AS a WHERE a.user_id = c.external_id AND a.bucket_id = ?0
			AND a.status = 'active' AND a.deleted_at IS NULL)
		ON CONFLICT DO NOTHING`,
		bucketID, now, now.Add(-7*24*time.Hour), now.Add(-30*24*time.Hour), now.Add(window)).Exec(ctx)
	if err != nil {
		return 0, err
	}
	n, _ := res.RowsAffected()
	return int(n), nil
}

// BenchmarkBackfill compares the first-time backfill of each benchmark
// bucket (see BenchmarkSweep for the population) with rawMatchers,
// interleaved in each iteration. Run it with
//
//	BUCKET_BENCH=1 go test ./tasks -run '^$' -bench Backfill -benchtime 3x -timeout 60m
func BenchmarkBackfill(b *testing.B) {
	p := benchScale(b)
	d := benchDeps(b, p, benchDefinitions)
	ctx := context.Background()
	exec := benchExec(b, d.DB)
	// Each run replaces the bucket's seeded memberships with its own: the
	// benchmarks after this one expect them as seeded (dated 30 and 20
	// days before benchNow).
	b.Cleanup(func() { p.population().SeedMemberships(b, d.DB) })
	for _, bucket := range []struct {
		id      string
		members int
	}{{"dormant", p.users - p.active}, {"power", p.power}} {
		b.Run(bucket.id, func(b *testing.B) {
			var engine, raw time.Duration
			for i := range b.N {
				for _, isRaw := range benchreport.Turns(i) {
					b.StopTimer()
					exec("DELETE FROM bucket_memberships WHERE bucket_id = ?", bucket.id)
					exec("VACUUM ANALYZE bucket_memberships")
					b.StartTimer()
					start := time.Now()
					var joined int
					if isRaw {
						n, err := rawMatchers(ctx, d, bucket.id, benchNow)
						if err != nil {
							b.Fatal(err)
						}
						joined = n
						raw += time.Since(start)
					} else {
						out, err := Backfill(ctx, d, BackfillInput{BucketID: bucket.id, Mode: ModeFirstTime})
						if err != nil {
							b.Fatal(err)
						}
						joined = out.Joined
						engine += time.Since(start)
					}
					if joined != bucket.members {
						b.Fatalf("raw=%v: %d joined, want %d", isRaw, joined, bucket.members)
					}
				}
			}
			benchreport.Time(b, engine, raw)
		})
	}
}
