package tasks

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect/pgdialect"

	"github.com/bucketworker/bucket-worker/db"
)

// BenchmarkFunnelLeaves measures committed leaves per second through the
// funnel (CAS, transition events and their pushes, in transactions of
// 10 000), next to the same rows written by one raw statement per chunk
// (UPDATE … RETURNING feeding INSERT … ON CONFLICT into user_events and the
// outbox), interleaved.
func BenchmarkFunnelLeaves(b *testing.B) {
	const n = 20_000
	e := newEnv(b, defs{"buckets/recent.yaml": recentlyActive})
	e.deps.Hatchet = nil
	bk := e.bucket("recent")
	e.exec(`INSERT INTO bucket_memberships (user_id, bucket_id, entered_at) SELECT 'u' || i, 'recent', ? FROM generate_series(1, ?) i`, t0.Add(-9*day), n)
	reset := func() {
		e.exec("UPDATE bucket_memberships SET status = 'active', left_at = NULL WHERE status = 'left'")
		e.exec("TRUNCATE user_events, bucket_event_outbox")
		e.exec("VACUUM ANALYZE bucket_memberships, user_events, bucket_event_outbox")
	}
	var funnel, raw time.Duration
	for b.Loop() {
		for _, isRaw := range []bool{false, true} {
			b.StopTimer()
			reset()
			members, err := db.CriteriaLeavers(e.ctx, e.db, bk, t0)
			if err != nil || len(members) != n {
				b.Fatalf("%d leavers, %v", len(members), err)
			}
			b.StartTimer()
			start := time.Now()
			left := 0
			for chunk := range slices.Chunk(members, db.LeaveChunk) {
				if isRaw {
					ids := make([]string, len(chunk))
					for i, m := range chunk {
						ids[i] = m.ID
					}
					var c int
					err = e.db.NewRaw(`
						WITH left_rows AS (
							UPDATE bucket_memberships AS m SET status = 'left', left_at = ?0, last_evaluated_at = ?0, updated_at = ?0
							WHERE m.id = ANY(?1::uuid[]) AND m.status = 'active' RETURNING m.user_id, m.entry_count
						), events AS (
							INSERT INTO user_events (user_id, event, properties, idempotency_key, source, occurred_at)
							SELECT user_id, 'bucket:left:recent', jsonb_build_object('bucketId', 'recent', 'userId', user_id,
								'transition', 'left', 'source', 'reconcile', 'entryCount', entry_count, 'reason', 'criteria'),
								'bucket:recent:' || user_id || ':left:' || entry_count, 'bucket', ?0
							FROM left_rows ON CONFLICT (idempotency_key) DO NOTHING
							RETURNING user_id, event, properties, idempotency_key
						), pushes AS (
							INSERT INTO bucket_event_outbox (event_key, payload, additional_metadata, idempotency_key, created_at, available_at)
							SELECT event, jsonb_build_object('userId', user_id, 'userEmail', '', 'properties', properties),
								jsonb_build_object('bucketId', 'recent', 'userId', user_id, 'transition', 'left', 'idempotencyKey', idempotency_key),
								idempotency_key, ?0, ?0 FROM events RETURNING 1
						)
						SELECT count(*) FROM pushes`, t0, pgdialect.Array(ids)).Scan(e.ctx, &c)
					left += c
				} else {
					var out Outcome
					out, err = transact(e.ctx, e.deps, func(ctx context.Context, tx bun.Tx) (Outcome, error) {
						return leave(ctx, tx, e.deps, bk, chunk, leaveSpec{Source: SourceReconcile, Reason: ReasonCriteria, Unless: bk.Criteria}, t0)
					})
					left += len(out.Transitions)
				}
				if err != nil {
					b.Fatal(err)
				}
			}
			if left != n {
				b.Fatalf("raw=%v: %d left", isRaw, left)
			}
			if isRaw {
				raw += time.Since(start)
			} else {
				funnel += time.Since(start)
			}
		}
	}
	b.ReportMetric(float64(n*b.N)/funnel.Seconds(), "funnel-leaves/s")
	b.ReportMetric(float64(n*b.N)/raw.Seconds(), "raw-leaves/s")
	b.ReportMetric(raw.Seconds()/funnel.Seconds(), "x-raw")
}
