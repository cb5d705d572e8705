package tasks

import (
	"context"
	"testing"
	"testing/fstest"
	"time"

	"github.com/bucketworker/bucket-worker/tasks/benchreport"
)

// compositeDefinitions is the composite benchmark's bucket: users of the
// sweep benchmark's population (see benchDefinitions) who were not active
// in the last 7 days but viewed 2 pages or more in the last 60 — about
// half the dormant users. Its members are evaluated one batch at a time
// (contract §6.2); it joins no one by sweep, so only that pass is timed.
var compositeDefinitions = fstest.MapFS{
	"buckets/lapsed-viewer.yaml": {Data: []byte(`
id: lapsed-viewer
name: Lapsed viewers
reconcileJoins: false
criteria:
  type: composite
  operator: and
  conditions:
    - {type: event, eventName: app.active, check: not_exists, within: 7d}
    - {type: event, eventName: page.view, check: count, operator: gte, value: 2, within: 60d}
`)},
}

// rawCompositeHolds is the predicate of lapsed-viewer written by hand, for
// the member m; ?0 is now.
const rawCompositeHolds = `(NOT EXISTS (SELECT 1 FROM user_events AS e WHERE e.user_id = m.user_id AND e.event = 'app.active'
		AND e.occurred_at >= ?0::timestamptz - interval '7 days')
	AND (SELECT count(*) FROM user_events AS e WHERE e.user_id = m.user_id AND e.event = 'page.view'
		AND e.occurred_at >= ?0::timestamptz - interval '60 days') >= 2)`

// seedComposite makes the matchers of lapsed-viewer its members, once, and
// returns how many there are.
func seedComposite(tb testing.TB, d *Deps) int {
	ctx := context.Background()
	exec := benchExec(tb, d.DB)
	count := func() int {
		var n int
		if err := d.DB.NewRaw("SELECT count(*) FROM bucket_memberships WHERE bucket_id = 'lapsed-viewer'").Scan(ctx, &n); err != nil {
			tb.Fatal(err)
		}
		return n
	}
	if n := count(); n > 0 {
		return n
	}
	exec(`INSERT INTO bucket_memberships (user_id, bucket_id, entered_at, entry_count, source, created_at, updated_at)
		SELECT m.user_id, 'lapsed-viewer', ?0::timestamptz - interval '30 days', 1, 'backfill', ?0, ?0
		FROM (SELECT external_id AS user_id FROM contacts) AS m WHERE `+rawCompositeHolds, benchNow)
	exec("VACUUM ANALYZE bucket_memberships")
	return count()
}

// BenchmarkCompositeSweep measures members evaluated per second by the
// composite pass of a reconcile sweep (batches of ReconcileBatch, each
// locked, evaluated in SQL and stamped in one statement, its leavers left
// in the same transaction), next to one raw UPDATE that evaluates and
// stamps every member of a live user at once, interleaved. Run it with
//
//	BUCKET_BENCH=1 go test ./tasks -run '^$' -bench CompositeSweep -benchtime 3x -timeout 60m
func BenchmarkCompositeSweep(b *testing.B) {
	p := benchScale(b)
	d := benchDeps(b, p, compositeDefinitions)
	d.SweepBudget = 0
	ctx := context.Background()
	exec := benchExec(b, d.DB)
	members := seedComposite(b, d)

	var sweep, raw time.Duration
	for b.Loop() {
		for _, isRaw := range []bool{false, true} {
			b.StopTimer()
			resetBench(exec)
			b.StartTimer()
			start := time.Now()
			var evaluated, left int
			if isRaw {
				var holds []bool
				err := d.DB.NewRaw(`UPDATE bucket_memberships AS m SET last_evaluated_at = ?0
					WHERE m.bucket_id = 'lapsed-viewer' AND m.status = 'active' AND m.deleted_at IS NULL
					AND (EXISTS (SELECT 1 FROM contacts AS c WHERE c.external_id = m.user_id AND c.deleted_at IS NULL)
						OR NOT EXISTS (SELECT 1 FROM contacts AS d WHERE d.external_id = m.user_id AND d.deleted_at IS NOT NULL))
					RETURNING `+rawCompositeHolds, benchNow).Scan(ctx, &holds)
				if err != nil {
					b.Fatal(err)
				}
				evaluated = len(holds)
				for _, h := range holds {
					if !h {
						left++
					}
				}
				raw += time.Since(start)
			} else {
				out, err := Reconcile(ctx, d, ReconcileInput{})
				if err != nil {
					b.Fatal(err)
				}
				evaluated, left = out.Buckets[0].Evaluated, out.Reconciled
				sweep += time.Since(start)
			}
			if evaluated != members || left != 0 {
				b.Fatalf("raw=%v: %d evaluated, %d left; want %d, 0", isRaw, evaluated, left, members)
			}
		}
	}
	benchreport.Rate(b, "members/s", float64(members*b.N), sweep, raw)
}
