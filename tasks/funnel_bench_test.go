package tasks

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"testing/fstest"
	"time"

	"github.com/uptrace/bun/dialect/pgdialect"

	"github.com/bucketworker/bucket-worker/db"
	"github.com/bucketworker/bucket-worker/tasks/benchreport"
)

// BenchmarkFunnel measures committed transitions per second through the
// funnel — membership, transition event and its push, one transaction per
// batch — next to the same rows written by one raw statement per batch,
// interleaved in every iteration:
//
//   - joins: 20 000 users in the sweep's join batches (ReconcileBatch), vs
//     INSERT … ON CONFLICT into bucket_memberships feeding the inserts into
//     user_events and the outbox;
//   - leaves: 20 000 members in the leave chunks (db.LeaveChunk), with the
//     sweep's criteria re-check, vs an UPDATE … RETURNING (the CAS by id)
//     feeding the same inserts.
//
// The raw statements write the same rows and documents but skip what the
// funnel adds: the criteria re-check, the entry-limit gate, the generic
// event, journey exits.
func BenchmarkFunnel(b *testing.B) {
	const n = 20_000
	for _, transition := range []TransitionKind{Entered, Left} {
		b.Run(string(transition), func(b *testing.B) {
			e := newEnv(b, defs{"buckets/recent.yaml": recentlyActive})
			e.deps = e.offline()
			if transition == Left {
				e.exec(`INSERT INTO bucket_memberships (user_id, bucket_id, entered_at) SELECT 'u' || i, 'recent', ? FROM generate_series(1, ?) i`,
					t0.Add(-9*day), n)
			}
			benchFunnel(b, e, transition, n, func() {
				if transition == Left {
					e.exec("UPDATE bucket_memberships SET status = 'active', left_at = NULL WHERE status = 'left'")
				} else {
					e.exec("TRUNCATE bucket_memberships")
				}
				e.exec("TRUNCATE user_events, bucket_event_outbox")
				e.exec("VACUUM ANALYZE bucket_memberships, user_events, bucket_event_outbox")
			})
		})
	}
}

// BenchmarkFunnelAtScale is BenchmarkFunnel on the sweep benchmark's
// population (BUCKET_BENCH_USERS users, 20 000 000 events for a million):
// 20 000 of its users join, 20 000 others leave, next to the same raw
// statements. There the floor is the insert into user_events and its
// indexes, most of them larger than memory can hold warm.
func BenchmarkFunnelAtScale(b *testing.B) {
	const n = 20_000
	p := benchScale(b)
	conn := keptBenchDB(b, "sweep", p, seedBenchPopulation)
	e := &env{t: b, ctx: context.Background(), db: conn,
		deps: benchDepsOn(b, conn, fstest.MapFS{"buckets/recent.yaml": {Data: []byte(recentlyActive)}})}
	e.exec("DELETE FROM bucket_memberships WHERE bucket_id = 'recent'")
	for _, transition := range []TransitionKind{Entered, Left} {
		b.Run(string(transition), func(b *testing.B) {
			if transition == Left {
				e.exec(`INSERT INTO bucket_memberships (user_id, bucket_id, entered_at) SELECT 'u' || i, 'recent', ? FROM generate_series(?, ?) i`,
					t0.Add(-9*day), n+1, 2*n)
			}
			benchFunnel(b, e, transition, n, func() {
				if transition == Left {
					e.exec("UPDATE bucket_memberships SET status = 'active', left_at = NULL WHERE bucket_id = 'recent' AND status = 'left'")
				} else {
					e.exec("DELETE FROM bucket_memberships WHERE bucket_id = 'recent'")
				}
				e.exec("DELETE FROM user_events WHERE source = 'bucket'")
				e.exec("TRUNCATE bucket_event_outbox")
				e.exec("VACUUM ANALYZE bucket_memberships, user_events, bucket_event_outbox")
			})
			e.exec("DELETE FROM bucket_memberships WHERE bucket_id = 'recent'")
		})
	}
}

// benchFunnel runs n transitions of the bucket recent through the funnel
// and through the raw statements, interleaved, each after reset, and
// reports both rates. For leaves, the bucket's members are the leavers.
func benchFunnel(b *testing.B, e *env, transition TransitionKind, n int, reset func()) {
	bk := e.bucket("recent")
	batch := ReconcileBatch
	if transition == Left {
		batch = db.LeaveChunk
	}
	var funnel, raw time.Duration
	for i := 0; b.Loop(); i++ {
		for _, isRaw := range benchreport.Turns(i) {
			b.StopTimer()
			reset()
			var users []string
			var members []db.Membership
			if transition == Left {
				var err error
				if members, err = db.CriteriaLeavers(e.ctx, e.db, bk, t0); err != nil || len(members) != n {
					b.Fatalf("%d leavers, %v", len(members), err)
				}
			} else {
				for i := range n {
					users = append(users, fmt.Sprintf("u%d", i+1))
				}
			}
			b.StartTimer()
			start := time.Now()
			var done int
			var err error
			if transition == Left {
				done, err = funnelLeaves(e, members, batch, isRaw)
			} else {
				done, err = funnelJoins(e, users, batch, isRaw)
			}
			if err != nil {
				b.Fatal(err)
			}
			if done != n {
				b.Fatalf("raw=%v: %d transitions, want %d", isRaw, done, n)
			}
			if isRaw {
				raw += time.Since(start)
			} else {
				funnel += time.Since(start)
			}
		}
	}
	benchreport.Rate(b, "transitions/s", float64(n*b.N), funnel, raw)
}

func funnelJoins(e *env, users []string, batch int, isRaw bool) (int, error) {
	bk := e.bucket("recent")
	joined := 0
	for chunk := range slices.Chunk(users, batch) {
		if isRaw {
			var c int
			err := e.db.NewRaw(`
				WITH changed AS (
					INSERT INTO bucket_memberships AS m (user_id, bucket_id, status, entered_at, last_evaluated_at, entry_count, source, created_at, updated_at)
					SELECT u, 'recent', 'active', ?0, ?0,
						1 + (SELECT count(*) FILTER (WHERE p.bucket_id = 'recent') FROM bucket_memberships AS p WHERE p.user_id = u),
						'reconcile', ?0, ?0
					FROM unnest(?1::text[]) AS u
					ON CONFLICT DO NOTHING
					RETURNING m.user_id, m.entry_count
				)`+rawEmissions("recent", "Recent", Entered, ""), t0, pgdialect.Array(chunk)).Scan(e.ctx, &c)
			if err != nil {
				return joined, err
			}
			joined += c
			continue
		}
		joiners := make([]db.Joiner, len(chunk))
		for i, u := range chunk {
			joiners[i] = db.Joiner{UserID: u}
		}
		out, err := e.deps.transact(e.ctx, t0, func(ctx context.Context, t *txn) error {
			_, err := t.join(ctx, bk, joiners, joinSpec{Source: SourceReconcile})
			return err
		})
		if err != nil {
			return joined, err
		}
		joined += len(out.Transitions)
	}
	return joined, nil
}

func funnelLeaves(e *env, members []db.Membership, batch int, isRaw bool) (int, error) {
	bk := e.bucket("recent")
	left := 0
	for chunk := range slices.Chunk(members, batch) {
		if isRaw {
			ids := make([]string, len(chunk))
			for i, m := range chunk {
				ids[i] = m.ID
			}
			var c int
			err := e.db.NewRaw(`
				WITH changed AS (
					UPDATE bucket_memberships AS m SET status = 'left', left_at = ?0, last_evaluated_at = ?0, updated_at = ?0
					FROM unnest(?1::uuid[]) AS ids(id) WHERE m.id = ids.id AND m.status = 'active' RETURNING m.user_id, m.entry_count
				)`+rawEmissions("recent", "Recent", Left, ReasonCriteria), t0, pgdialect.Array(ids)).Scan(e.ctx, &c)
			if err != nil {
				return left, err
			}
			left += c
			continue
		}
		out, err := e.deps.transact(e.ctx, t0, func(ctx context.Context, t *txn) error {
			_, err := t.leave(ctx, bk, chunk, leaveSpec{Source: SourceReconcile, Reason: ReasonCriteria, Unless: bk.Criteria})
			return err
		})
		if err != nil {
			return left, err
		}
		left += len(out.Transitions)
	}
	return left, nil
}
