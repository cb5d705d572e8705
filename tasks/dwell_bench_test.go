package tasks

import (
	"context"
	"fmt"
	"testing"
	"testing/fstest"
	"time"

	"github.com/bucketworker/bucket-worker/db"
	"github.com/bucketworker/bucket-worker/db/dbtest"
	"github.com/bucketworker/bucket-worker/journeys"
	"github.com/bucketworker/bucket-worker/tasks/benchreport"
)

// dormantDaily is a dwell reaction of the sweep benchmark's absence bucket:
// every day of a dormant membership. All 600 000 of its members (at
// 1 000 000 users), who entered 30 days before benchNow, are due.
const dormantDaily = "id: dormant-daily\ntrigger: {event: \"bucket:dwell:dormant:every-86400000\"}\n" +
	"sourceBucketId: dormant\nreactionKind: dwell\ndwellSchedule: {every: 1d}\n"

// BenchmarkDwellPass compares the sweep's dwell pass over every member of
// the benchmark's absence bucket, all due, with rawDwell — the same fires
// as one hand-written UPDATE … RETURNING feeding INSERT … SELECT —
// interleaved in each iteration. Run it with
//
//	BUCKET_BENCH=1 go test ./tasks -run '^$' -bench DwellPass -benchtime 2x -timeout 60m
func BenchmarkDwellPass(b *testing.B) {
	p := benchScale(b)
	d := benchDeps(b, p, benchDefinitions)
	js, report := journeys.Load(fstest.MapFS{"journeys/dormant-daily.yaml": {Data: []byte(dormantDaily)}})
	if err := report.Err(); err != nil {
		b.Fatal(err)
	}
	d.Journeys = journeys.NewRegistry(js)
	ctx := context.Background()
	exec := benchExec(b, d.DB)
	members := p.users - p.active
	reset := func() {
		exec("UPDATE bucket_memberships SET dwell_state = '{}', last_evaluated_at = NULL WHERE dwell_state <> '{}'")
		resetBench(exec)
	}
	reset()

	var passTotal, rawTotal time.Duration
	for i := range b.N {
		for _, raw := range benchreport.Turns(i) {
			start := time.Now()
			var fired int
			if raw {
				n, err := rawDwell(ctx, d, benchNow)
				if err != nil {
					b.Fatal(err)
				}
				fired = n
				rawTotal += time.Since(start)
			} else {
				bk, _ := d.Buckets.Get("dormant")
				s := &sweep{d: d, b: bk, now: benchNow, rep: BucketSweep{BucketID: bk.ID}}
				if err := s.dwellFires(ctx); err != nil {
					b.Fatal(err)
				}
				fired = s.rep.DwellFired
				passTotal += time.Since(start)
			}
			b.StopTimer()
			if fired != members {
				b.Fatalf("raw=%v: %d fired, want %d", raw, fired, members)
			}
			reset()
			b.StartTimer()
		}
	}
	benchreport.Time(b, passTotal, rawTotal)
}

// rawDwell is the dwell pass's baseline: one statement that stamps every
// due live member of dormant and stores and enqueues each fire's event.
func rawDwell(ctx context.Context, d *Deps, now time.Time) (int, error) {
	const label = "every-86400000"
	var n int
	err := d.DB.NewRaw(`
		WITH changed AS (
			UPDATE bucket_memberships AS m
			SET dwell_state = coalesce(m.dwell_state, '{}') || jsonb_build_object('`+label+`', ?1::text),
				last_evaluated_at = ?0, updated_at = ?0
			WHERE m.bucket_id = 'dormant' AND m.status = 'active' AND m.deleted_at IS NULL
				AND (EXISTS (SELECT 1 FROM contacts AS c WHERE c.external_id = m.user_id AND c.deleted_at IS NULL)
					OR NOT EXISTS (SELECT 1 FROM contacts AS x WHERE x.external_id = m.user_id AND x.deleted_at IS NOT NULL))
				AND coalesce(m.dwell_anchor_at, m.entered_at) <= ?2
				AND coalesce((m.dwell_state ->> '`+label+`')::timestamptz, coalesce(m.dwell_anchor_at, m.entered_at)) <= ?2
			RETURNING m.user_id, m.entry_count,
				floor(extract(epoch FROM ?0::timestamptz - coalesce(m.dwell_anchor_at, m.entered_at)) / 86400)::int AS ordinal
		), events AS (
			INSERT INTO user_events (id, user_id, event, properties, idempotency_key, source, occurred_at)
			SELECT `+rawTimeOrderedID+`, user_id, 'bucket:dwell:dormant:`+label+`',
				jsonb_build_object('bucketId', 'dormant', 'bucketName', 'Dormant', 'userId', user_id, 'transition', 'dwell',
					'source', 'reconcile', 'entryCount', entry_count, 'dwellCount', ordinal),
				'bucket:dormant:' || user_id || ':dwell:`+label+`:' || ordinal, 'bucket', ?0
			FROM changed
			ON CONFLICT (idempotency_key) DO NOTHING
			RETURNING user_id, event, properties, idempotency_key
		), pushes AS (
			INSERT INTO bucket_event_outbox (event_key, payload, additional_metadata, idempotency_key, created_at, available_at)
			SELECT event, jsonb_build_object('userId', user_id, 'userEmail', '', 'properties', properties),
				jsonb_build_object('bucketId', 'dormant', 'userId', user_id, 'transition', 'dwell', 'idempotencyKey', idempotency_key),
				idempotency_key, ?0, ?0
			FROM events
			RETURNING 1
		)
		SELECT count(*) FROM pushes`,
		now, now.UTC().Format(db.DwellStampFormat), now.Add(-24*time.Hour)).Scan(ctx, &n)
	return n, err
}

// BenchmarkIngestContactID is what writing contact_id costs a single
// ingest on a Hogsend database of today (contract §14.1): the same
// ingests with the column written, and left NULL as the worker's own
// schema has none, on one database.
func BenchmarkIngestContactID(b *testing.B) {
	conn, _ := dbtest.HogsendLatest(b)
	for _, write := range []bool{false, true} {
		b.Run(fmt.Sprintf("contact_id=%v", write), func(b *testing.B) {
			e := newEnvOn(b, conn, &clock{now: t0}, defs{"buckets/recent.yaml": recentlyActive})
			e.deps = e.offline()
			if !write {
				e.deps.Schema = db.Schema{}
			}
			i := 0
			for b.Loop() {
				i++
				payload := fmt.Appendf(nil, `{"userId":"%v-u%d"}`, write, i)
				if _, err := HandleIngest(e.ctx, e.deps, IngestStore, "app.active", payload, ""); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
