package tasks

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"testing"
	"testing/fstest"
	"time"

	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect/pgdialect"

	"github.com/bucketworker/bucket-worker/buckets"
	"github.com/bucketworker/bucket-worker/db"
	"github.com/bucketworker/bucket-worker/db/dbtest"
	"github.com/bucketworker/bucket-worker/journeys"
	"github.com/bucketworker/bucket-worker/tasks/benchreport"
)

// The sweep benchmark's population is dbtest.Population at benchNow with
// 40% active and 2% power users: the members of the absence bucket
// "dormant" and the count bucket "power".
//
// The leaver scenario gives 3.5% of the users (35 000 of 1 000 000) — all
// dormant members — an app.active an hour ago, so they leave "dormant".
var benchDefinitions = fstest.MapFS{
	"buckets/dormant.yaml": {Data: []byte("id: dormant\nname: Dormant\n" +
		"criteria: {type: event, eventName: app.active, check: not_exists, within: 7d}\n")},
	"buckets/power.yaml": {Data: []byte("id: power\nname: Power users\n" +
		"criteria: {type: event, eventName: key.action, check: count, operator: gte, value: 10, within: 30d}\n")},
}

// benchNow is the sweep benchmark's clock: the seeded data is relative to it.
var benchNow = time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)

type benchPopulation struct {
	users, active, power, leavers int
}

func benchScale(b testing.TB) benchPopulation {
	pop := dbtest.NewPopulation(dbtest.BenchUsers(b), benchNow)
	return benchPopulation{users: pop.Users, active: pop.Active, power: pop.Power, leavers: pop.Users * 35 / 1000}
}

// population is the seeded population of p, at benchNow.
func (p benchPopulation) population() dbtest.Population {
	return dbtest.NewPopulation(p.users, benchNow)
}

// benchExec returns a statement runner that fails the benchmark on error.
func benchExec(b testing.TB, conn *bun.DB) func(query string, args ...any) {
	return func(query string, args ...any) {
		if _, err := conn.NewRaw(query, args...).Exec(context.Background()); err != nil {
			b.Fatalf("%v\n%s", err, query)
		}
	}
}

// benchDeps opens (seeding it the first time) the benchmark database, with
// the definitions' buckets.
func benchDeps(b testing.TB, p benchPopulation, definitions fstest.MapFS) *Deps {
	return benchDepsOn(b, keptBenchDB(b, "sweep", p, seedBenchPopulation), definitions)
}

// keptBenchDB opens a benchmark's database bw_bench_<name>_<users>, seeding
// it the first time; the seed ends by creating the marker table
// bench_seeded, so that an interrupted seed is done again.
func keptBenchDB(b testing.TB, name string, p benchPopulation, seed func(testing.TB, *bun.DB, benchPopulation)) *bun.DB {
	if os.Getenv("BUCKET_BENCH") == "" {
		b.Skipf("set BUCKET_BENCH=1 to run the %s benchmark (it seeds BUCKET_BENCH_USERS users, 1 000 000 by default, once)", name)
	}
	conn, _, created := dbtest.Kept(b, fmt.Sprintf("bw_bench_%s_%d", name, p.users))
	var seeded bool
	if !created {
		_ = conn.NewRaw("SELECT to_regclass('bench_seeded') IS NOT NULL").Scan(context.Background(), &seeded)
	}
	if !seeded {
		start := time.Now()
		seed(b, conn, p)
		b.Logf("seeded %d users in %s", p.users, time.Since(start).Round(time.Second))
	}
	return conn
}

// benchDepsOn is the engine of a benchmark on its seeded database, with the
// definitions' buckets recorded as backfilled.
func benchDepsOn(b testing.TB, conn *bun.DB, definitions fstest.MapFS) *Deps {
	ctx := context.Background()
	bs, report := buckets.Load(definitions)
	if err := report.Err(); err != nil {
		b.Fatal(err)
	}
	for _, bk := range bs {
		if err := db.SetCriteriaHash(ctx, conn, bk.ID, bk.CriteriaHash, benchNow); err != nil {
			b.Fatal(err)
		}
	}
	return &Deps{
		DB: conn, Buckets: buckets.NewRegistry(bs), Journeys: journeys.NewRegistry(nil),
		Logger: slog.New(slog.DiscardHandler), Now: func() time.Time { return benchNow },
		Switch: NewRuntimeSwitch(conn, time.Minute),
	}
}

// seedBenchPopulation seeds the population at benchNow, and marks it
// complete.
func seedBenchPopulation(b testing.TB, conn *bun.DB, p benchPopulation) {
	dbtest.SeedPopulation(b, conn, p.population())
	benchExec(b, conn)("CREATE TABLE bench_seeded ()") // the population is complete
}

// resetBench undoes what a benchmark scenario did to the population: the
// leavers' new events, the transitions and their pushes, the evaluation
// stamps.
func resetBench(exec func(query string, args ...any)) {
	exec("DELETE FROM user_events WHERE source IN ('bench', 'bucket')")
	exec("UPDATE bucket_memberships SET status = 'active', left_at = NULL, updated_at = created_at WHERE status = 'left'")
	exec("UPDATE bucket_memberships SET last_evaluated_at = NULL WHERE last_evaluated_at IS NOT NULL")
	exec("TRUNCATE bucket_event_outbox")
	exec("VACUUM ANALYZE user_events, bucket_memberships, bucket_event_outbox")
}

// rawSweep is the baseline: the same set-based work as the sweep of the
// two benchmark buckets, as plain SQL run directly — per bucket the
// SHOULD-LEAVE query, then per 10 000 leavers one statement that flips them
// by id, stores their events and enqueues their pushes; and the absence
// bucket's join-candidate query. It skips what the engine adds: the
// re-check of the criteria in the CAS, and the Go side of the funnel.
func rawSweep(ctx context.Context, conn *bun.DB, now time.Time) (left, candidates int, err error) {
	n, err := rawLeaves(ctx, conn, now, "dormant", "Dormant", "EXISTS (SELECT 1 FROM user_events AS e WHERE e.user_id = m.user_id AND e.event = 'app.active' AND e.occurred_at >= ?)",
		now.Add(-7*24*time.Hour))
	if err != nil {
		return 0, 0, err
	}
	left += n
	n, err = rawLeaves(ctx, conn, now, "power", "Power users", "(SELECT count(*) FROM user_events AS e WHERE e.user_id = m.user_id AND e.event = 'key.action' AND e.occurred_at >= ?) < 10",
		now.Add(-30*24*time.Hour))
	if err != nil {
		return 0, 0, err
	}
	left += n
	var joiners []struct {
		ID, ExternalID string
		Email          *string
	}
	err = conn.NewRaw(`
		SELECT c.id, c.external_id, c.email FROM contacts AS c
		WHERE c.deleted_at IS NULL AND c.external_id IS NOT NULL
		AND EXISTS (SELECT 1 FROM user_events AS f WHERE f.user_id = c.external_id AND f.event = 'app.active')
		AND NOT EXISTS (SELECT 1 FROM bucket_memberships AS m WHERE m.user_id = c.external_id AND m.bucket_id = 'dormant'
			AND m.status = 'active' AND m.deleted_at IS NULL)
		AND NOT EXISTS (SELECT 1 FROM user_events AS e WHERE e.user_id = c.external_id AND e.event = 'app.active' AND e.occurred_at >= ?)`,
		now.Add(-7*24*time.Hour)).Scan(ctx, &joiners)
	return left, len(joiners), err
}

// rawLeaves is the baselines' leave of one bucket at now: the SHOULD-LEAVE
// query over live members, then per LeaveChunk leavers one statement that
// flips them by id and stores and enqueues their events.
func rawLeaves(ctx context.Context, conn *bun.DB, now time.Time, bucketID, name, shouldLeave string, args ...any) (int, error) {
	var ids []string
	err := conn.NewRaw(`SELECT m.id FROM bucket_memberships AS m
		LEFT JOIN contacts AS c ON c.external_id = m.user_id AND c.deleted_at IS NULL
		WHERE m.bucket_id = ? AND m.status = 'active' AND m.deleted_at IS NULL AND
			(c.id IS NOT NULL OR NOT EXISTS (SELECT 1 FROM contacts AS d WHERE d.external_id = m.user_id AND d.deleted_at IS NOT NULL))
		AND `+shouldLeave+` ORDER BY m.id`, append([]any{bucketID}, args...)...).Scan(ctx, &ids)
	if err != nil {
		return 0, err
	}
	total := 0
	for chunk := range slices.Chunk(ids, db.LeaveChunk) {
		var n int
		err := conn.NewRaw(`
			WITH changed AS (
				UPDATE bucket_memberships AS m SET status = 'left', left_at = ?0, last_evaluated_at = ?0, updated_at = ?0
				FROM unnest(?1::uuid[]) AS ids(id) WHERE m.id = ids.id AND m.status = 'active'
				RETURNING m.user_id, m.entry_count
			)`+rawEmissions(bucketID, name, Left, ReasonCriteria),
			now, pgdialect.Array(chunk)).Scan(ctx, &n)
		if err != nil {
			return total, err
		}
		total += n
	}
	return total, nil
}

// rawTimeOrderedID is a version 7 UUID made in SQL, as db.NewID makes
// one in Go: the Unix milliseconds over the first 48 bits of a random
// UUID, and the version set to 7.
const rawTimeOrderedID = `encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid()) placing ` +
	`substring(int8send((extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3) FROM 1 FOR 6), 52, 1), 53, 1), 'hex')::uuid`

// rawEmissions completes a raw statement whose CTE "changed" returns the
// user_id and entry_count of transitions of the bucket: it stores their
// events and enqueues their pushes, as the funnel does, and selects how
// many pushes it enqueued. ?0 is now.
func rawEmissions(bucketID, bucketName string, transition TransitionKind, reason LeaveReason) string {
	props := fmt.Sprintf(`'bucketId', '%s', 'bucketName', '%s', 'userId', user_id, 'transition', '%s', 'source', 'reconcile', 'entryCount', entry_count`,
		bucketID, bucketName, transition)
	if reason != "" {
		props += fmt.Sprintf(`, 'reason', '%s'`, reason)
	}
	return fmt.Sprintf(`, events AS (
			INSERT INTO user_events (id, user_id, event, properties, idempotency_key, source, occurred_at)
			SELECT `+rawTimeOrderedID+`, user_id, 'bucket:%[3]s:%[1]s', jsonb_build_object(%[4]s),
				'bucket:%[1]s:' || user_id || ':%[3]s:' || entry_count, 'bucket', ?0
			FROM changed
			ON CONFLICT (idempotency_key) DO NOTHING
			RETURNING user_id, event, properties, idempotency_key
		), pushes AS (
			INSERT INTO bucket_event_outbox (event_key, payload, additional_metadata, idempotency_key, created_at, available_at)
			SELECT event, jsonb_build_object('userId', user_id, 'userEmail', '', 'properties', properties),
				jsonb_build_object('bucketId', '%[1]s', 'userId', user_id, 'transition', '%[3]s', 'idempotencyKey', idempotency_key),
				idempotency_key, ?0, ?0
			FROM events
			RETURNING 1
		)
		SELECT count(*) FROM pushes`, bucketID, bucketName, transition, props)
}

// BenchmarkSweep compares one reconcile sweep of the benchmark buckets
// with rawSweep, interleaved in each iteration; it reports both times and
// their ratio. Run it with
//
//	BUCKET_BENCH=1 go test ./tasks -run '^$' -bench Sweep -benchtime 3x -timeout 60m
func BenchmarkSweep(b *testing.B) {
	p := benchScale(b)
	d := benchDeps(b, p, benchDefinitions)
	ctx := context.Background()
	exec := benchExec(b, d.DB)
	reset := func() { resetBench(exec) }
	reset()

	for _, sc := range []struct {
		name    string
		leavers int
	}{{"steady", 0}, {"leavers", p.leavers}} {
		b.Run(fmt.Sprintf("%s=%d", sc.name, sc.leavers), func(b *testing.B) {
			var sweepTotal, rawTotal time.Duration
			for i := range b.N {
				for _, raw := range benchreport.Turns(i) {
					b.StopTimer()
					if sc.leavers > 0 {
						exec(`INSERT INTO user_events (user_id, event, source, occurred_at)
							SELECT 'u' || i, 'app.active', 'bench', ?::timestamptz - interval '1 hour' FROM generate_series(?, ?) i`,
							benchNow, p.active+1, p.active+sc.leavers)
						exec("ANALYZE user_events")
					}
					b.StartTimer()
					start := time.Now()
					var left int
					if raw {
						n, _, err := rawSweep(ctx, d.DB, benchNow)
						if err != nil {
							b.Fatal(err)
						}
						left = n
						rawTotal += time.Since(start)
					} else {
						out, err := Reconcile(ctx, d, ReconcileInput{})
						if err != nil {
							b.Fatal(err)
						}
						for _, bk := range out.Buckets {
							if bk.Error != "" {
								b.Fatal(bk.Error)
							}
						}
						left = out.Reconciled
						sweepTotal += time.Since(start)
					}
					b.StopTimer()
					if left != sc.leavers {
						b.Fatalf("raw=%v: %d left, want %d", raw, left, sc.leavers)
					}
					reset()
					b.StartTimer()
				}
			}
			benchreport.Time(b, sweepTotal, rawTotal)
		})
	}
}
