package tasks

import (
	"context"
	"errors"
	"slices"
	"testing"
	"testing/fstest"
	"time"

	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect/pgdialect"

	"github.com/bucketworker/bucket-worker/db"
	"github.com/bucketworker/bucket-worker/db/dbtest"
	"github.com/bucketworker/bucket-worker/tasks/benchreport"
)

// The criteria benchmark's population (BUCKET_BENCH_USERS users, 20 events
// each, over 60 days), for the legs of contract §3.5 and §3.6:
//   - contacts: 30% on a trial whose trial_ends_at (an RFC 3339 string) is
//     spread over 30 days either side of the clock, so that about 5% of
//     them end within 3 days — the joiners of "ending" (within_next 3d);
//     the others on "pro" or "free";
//   - 2% buyers, members of "pro" (count purchase gte 3 within 30d where
//     plan eq "pro") and "spenders" (sum of amount gte 100 within 30d):
//     four pro purchases of 30 each, all in the window for half of them and
//     two aged out for the other half — the leavers of both buckets;
//   - everyone: three purchases over 60 days, plan "basic" or "pro" and an
//     amount of 1 to 50, and page.view events without properties.
var criteriaBenchDefinitions = fstest.MapFS{
	"buckets/pro.yaml": {Data: []byte("id: pro\nname: Pro buyers\ncriteria: {type: event, eventName: purchase, check: count, " +
		"operator: gte, value: 3, within: 30d, where: [{property: plan, operator: eq, value: pro}]}\n")},
	"buckets/spenders.yaml": {Data: []byte("id: spenders\nname: Big spenders\ncriteria: {type: event, eventName: purchase, " +
		"check: sum, property: amount, operator: gte, value: 100, within: 30d}\n")},
	"buckets/ending.yaml": {Data: []byte("id: ending\nname: Trial ending soon\ncriteria: {type: composite, operator: and, conditions: [" +
		"{type: property, property: plan, operator: eq, value: trial}, {type: property, property: trial_ends_at, operator: within_next, value: 3d}]}\n")},
}

func criteriaBenchDeps(b *testing.B) (*Deps, benchPopulation) {
	p := benchScale(b)
	return benchDepsOn(b, keptBenchDB(b, "criteria", p, seedCriteriaPopulation), criteriaBenchDefinitions), p
}

func seedCriteriaPopulation(b testing.TB, conn *bun.DB, p benchPopulation) {
	exec := benchExec(b, conn)
	indexes := dbtest.UserEventIndexes(b)
	exec("TRUNCATE contacts, user_events, bucket_memberships, bucket_configs, bucket_event_outbox")
	exec("DROP INDEX IF EXISTS user_events_user_event_occurred_idx, user_events_idempotency_key_idx, user_events_event_occurred_user_idx")
	n, buyers := p.users, p.power
	exec(`INSERT INTO contacts (external_id, properties)
		SELECT 'u' || i, CASE WHEN i % 10 < 3
			THEN jsonb_build_object('plan', 'trial', 'trial_ends_at',
				to_char((?::timestamptz + (random() * 60 - 30) * interval '1 day') AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'))
			ELSE jsonb_build_object('plan', CASE WHEN i % 2 = 0 THEN 'pro' ELSE 'free' END) END
		FROM generate_series(1, ?) i`, benchNow, n)
	// The buyers' four pro purchases: half of them with two aged out.
	exec(`INSERT INTO user_events (user_id, event, properties, occurred_at)
		SELECT 'u' || i, 'purchase', '{"plan":"pro","amount":30}',
			?::timestamptz - CASE WHEN i % 2 = 0 AND k <= 2 THEN interval '31 days' + random() * interval '20 days'
				ELSE random() * interval '29 days' END
		FROM generate_series(1, ?) i, generate_series(1, 4) k`, benchNow, buyers)
	exec(`INSERT INTO user_events (user_id, event, properties, occurred_at)
		SELECT 'u' || i, 'purchase', jsonb_build_object('plan', CASE WHEN random() < 0.3 THEN 'pro' ELSE 'basic' END,
			'amount', round((1 + random() * 49)::numeric, 2)),
			?::timestamptz - random() * 60 * interval '1 day'
		FROM generate_series(?, ?) i, generate_series(1, 3) k`, benchNow, buyers+1, n)
	exec(`INSERT INTO user_events (user_id, event, occurred_at)
		SELECT 'u' || (1 + floor(? * random()))::int, 'page.view', ?::timestamptz - random() * 60 * interval '1 day'
		FROM generate_series(1, ?) j`, n, benchNow, 20*n-4*buyers-3*(n-buyers))
	for _, def := range indexes {
		exec(def)
	}
	for _, bucket := range []string{"pro", "spenders"} {
		exec(`INSERT INTO bucket_memberships (user_id, bucket_id, entered_at, entry_count, source, created_at, updated_at)
			SELECT 'u' || i, ?, ?::timestamptz - interval '20 days', 1, 'backfill', ?, ? FROM generate_series(1, ?) i`,
			bucket, benchNow, benchNow, benchNow, buyers)
	}
	exec("VACUUM ANALYZE")
	exec("CREATE TABLE bench_seeded ()")
}

// BenchmarkCriteriaSweep sweeps a where count bucket and a sum bucket, each
// of 2% of the users of whom half leave, next to the hand-written SQL that
// finds and flips the same leavers (the SHOULD-LEAVE query, then per 10 000
// one statement that flips them and stores and enqueues their events).
func BenchmarkCriteriaSweep(b *testing.B) {
	d, p := criteriaBenchDeps(b)
	ctx := context.Background()
	exec := benchExec(b, d.DB)
	reset := func() { resetBench(exec) }
	reset()
	cutoff := benchNow.Add(-30 * 24 * time.Hour)
	for _, sc := range []struct {
		bucket, name, shouldLeave string
	}{
		{"pro", "Pro buyers", `(SELECT count(*) FROM user_events AS e WHERE e.user_id = m.user_id AND e.event = 'purchase'
			AND e.occurred_at >= ? AND e.properties ->> 'plan' = 'pro') < 3`},
		{"spenders", "Big spenders", `(SELECT coalesce(sum((e.properties ->> 'amount')::numeric), 0) FROM user_events AS e
			WHERE e.user_id = m.user_id AND e.event = 'purchase' AND e.occurred_at >= ? AND jsonb_typeof(e.properties -> 'amount') = 'number') < 100`},
	} {
		b.Run(sc.bucket, func(b *testing.B) {
			want := p.power / 2
			var sweepTotal, rawTotal time.Duration
			for i := range b.N {
				for _, raw := range benchreport.Turns(i) {
					start := time.Now()
					var left int
					if raw {
						n, err := rawLeaves(ctx, d.DB, benchNow, sc.bucket, sc.name, sc.shouldLeave, cutoff)
						if err != nil {
							b.Fatal(err)
						}
						left = n
						rawTotal += time.Since(start)
					} else {
						out, err := Reconcile(ctx, d, ReconcileInput{BucketIDs: []string{sc.bucket}})
						if err != nil || out.bucket(sc.bucket).Error != "" {
							b.Fatal(err, out.bucket(sc.bucket).Error)
						}
						left = out.Reconciled
						sweepTotal += time.Since(start)
					}
					if left != want {
						b.Fatalf("raw=%v: %d left, want %d", raw, left, want)
					}
					b.StopTimer()
					reset()
					b.StartTimer()
				}
			}
			benchreport.Time(b, sweepTotal, rawTotal)
		})
	}
}

// BenchmarkDateJoins is the join pass of a relative-date bucket over all
// contacts (plan eq "trial" and trial_ends_at within_next 3d), next to two
// hand-written baselines that insert and emit the same joiners: one
// statement that casts the dates and does it all (rawDateJoins), and the
// same work in the batches contract §6.3 asks of any implementation
// (rawDateJoinsInBatches), the floor of that design.
func BenchmarkDateJoins(b *testing.B) {
	d, _ := criteriaBenchDeps(b)
	ctx := context.Background()
	exec := benchExec(b, d.DB)
	reset := func() {
		exec("DELETE FROM bucket_memberships WHERE bucket_id = 'ending'")
		resetBench(exec)
	}
	reset()
	const sweep, oneStatement, inBatches = 0, 1, 2
	var took [3]time.Duration
	for i := range b.N {
		var joined [3]int
		for _, side := range benchreport.Rotation(i, 3) {
			start := time.Now()
			var err error
			switch side {
			case sweep:
				var out ReconcileOutput
				out, err = Reconcile(ctx, d, ReconcileInput{BucketIDs: []string{"ending"}})
				if err == nil && out.bucket("ending").Error != "" {
					err = errors.New(out.bucket("ending").Error)
				}
				joined[side] = out.Joined
			case oneStatement:
				joined[side], err = rawDateJoins(ctx, d.DB, benchNow)
			case inBatches:
				joined[side], err = rawDateJoinsInBatches(ctx, d.DB, benchNow)
			}
			if err != nil {
				b.Fatalf("side %d of the date join pass: %v", side, err)
			}
			took[side] += time.Since(start)
			b.StopTimer()
			reset()
			b.StartTimer()
		}
		if joined[sweep] == 0 || joined[oneStatement] != joined[sweep] || joined[inBatches] != joined[sweep] {
			b.Fatalf("the sweep joined %d, the raw SQL %d in one statement and %d in batches",
				joined[sweep], joined[oneStatement], joined[inBatches])
		}
		b.ReportMetric(float64(joined[sweep]), "joiners")
	}
	benchreport.Time(b, took[sweep], took[oneStatement])
	n := float64(b.N)
	benchreport.ReportFloor(b, "s/run", took[sweep].Seconds()/n, took[inBatches].Seconds()/n)
}

// dateJoiners is the SQL of the joiners of "ending" at ?0: the contacts
// whose trial ends within ?1, read as c.
const dateJoiners = `c.deleted_at IS NULL AND c.external_id IS NOT NULL
	AND c.properties ->> 'plan' = 'trial'
	AND (c.properties ->> 'trial_ends_at')::timestamptz BETWEEN ?0 AND ?1`

// rawDateJoinsOf is the statement that inserts the joiners of "ending" read
// from the FROM item from, and stores and enqueues their events.
func rawDateJoinsOf(from string) string {
	return `
		WITH changed AS (
			INSERT INTO bucket_memberships (user_id, user_email, bucket_id, status, entered_at, expires_at,
				last_evaluated_at, entry_count, source, created_at, updated_at)
			SELECT c.external_id, c.email, 'ending', 'active', ?0, (c.properties ->> 'trial_ends_at')::timestamptz, ?0,
				1 + (SELECT count(*) FILTER (WHERE p.bucket_id = 'ending') FROM bucket_memberships AS p WHERE p.user_id = c.external_id),
				'reconcile', ?0, ?0
			FROM ` + from + `
			WHERE ` + dateJoiners + `
			AND NOT EXISTS (SELECT 1 FROM bucket_memberships AS m WHERE m.user_id = c.external_id
				AND m.bucket_id = 'ending' AND m.status = 'active' AND m.deleted_at IS NULL)
			ON CONFLICT DO NOTHING
			RETURNING user_id, entry_count
		)` + rawEmissions("ending", "Trial ending soon", Entered, "")
}

// rawDateJoins is the date join pass's baseline: one statement that casts
// the contacts' dates, inserts the joiners of "ending" and stores and
// enqueues their events.
func rawDateJoins(ctx context.Context, idb bun.IDB, now time.Time) (int, error) {
	var n int
	err := idb.NewRaw(rawDateJoinsOf("contacts AS c"), now, now.Add(3*24*time.Hour)).Scan(ctx, &n)
	return n, err
}

// rawDateJoinsInBatches is rawDateJoins in the batches of contract §6.3:
// the joiners chosen by one query in user key order, then ReconcileBatch
// at a time, each batch in a transaction that takes its users' locks and
// their contacts' (§5.3) and re-checks the criteria in the statement that
// inserts and emits. What the sweep takes past it is the engine's own.
func rawDateJoinsInBatches(ctx context.Context, conn *bun.DB, now time.Time) (int, error) {
	until := now.Add(3 * 24 * time.Hour)
	var users []string
	err := conn.NewRaw(`SELECT c.external_id FROM contacts AS c WHERE `+dateJoiners+`
		AND NOT EXISTS (SELECT 1 FROM bucket_memberships AS m WHERE m.user_id = c.external_id
			AND m.bucket_id = 'ending' AND m.status = 'active' AND m.deleted_at IS NULL)
		ORDER BY c.external_id COLLATE "C"`, now, until).Scan(ctx, &users)
	if err != nil {
		return 0, err
	}
	joined := 0
	for batch := range slices.Chunk(users, ReconcileBatch) {
		err := conn.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
			if err := db.LockUsers(ctx, tx, batch); err != nil {
				return err
			}
			if err := db.LockContacts(ctx, tx, batch); err != nil {
				return err
			}
			var n int
			err := tx.NewRaw(rawDateJoinsOf("unnest(?2::text[]) AS u(user_id) JOIN contacts AS c ON c.external_id = u.user_id"),
				now, until, pgdialect.Array(batch)).Scan(ctx, &n)
			joined += n
			return err
		})
		if err != nil {
			return joined, err
		}
	}
	return joined, nil
}
