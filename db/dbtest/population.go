package dbtest

import (
	"context"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"github.com/bucketworker/bucket-worker/db"
)

// Population is the synthetic population the benchmarks at scale run on:
// Users users with 20 events each on average, five event names over the 60
// days before Now.
//   - Active users (40% in the benchmarks) have app.active within the last
//     6 days and over 60 days; the others only 7 days and more ago, and
//     they are the members of "dormant" (not_exists app.active within 7d).
//   - Power users (2%) have 12 key.action in the last 29 days, and they are
//     the members of "power" (count key.action gte 10 within 30d);
//     everyone else has 5 key.action over 60 days.
//   - page.view and purchase are skewed towards low user numbers; everyone
//     has one signup, 60 days ago.
//
// User i is "u<i>"; the active and the power users are the first ones.
type Population struct {
	Users, Active, Power int
	// Now is the instant the events are relative to.
	Now time.Time
}

// NewPopulation is the benchmarks' population of users at now: 40% of
// them active and 2% power users.
func NewPopulation(users int, now time.Time) Population {
	return Population{Users: users, Active: users * 40 / 100, Power: users * 2 / 100, Now: now}
}

// BenchUsers is the size of the benchmarks' populations:
// BUCKET_BENCH_USERS, 1 000 000 by default.
func BenchUsers(tb testing.TB) int {
	v := os.Getenv("BUCKET_BENCH_USERS")
	if v == "" {
		return 1_000_000
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1000 {
		tb.Fatalf("BUCKET_BENCH_USERS=%q: want a number of users, at least 1000", v)
	}
	return n
}

// SeedPopulation fills the freshly migrated database with the
// population: contacts, 20 events per user on average, and the
// memberships of dormant and power. It loads the events without the
// indexes of user_events and builds them afterwards: the primary key, and
// the others from the migrations' own statements.
func SeedPopulation(tb testing.TB, conn *bun.DB, p Population) {
	tb.Helper()
	exec := seeder(tb, conn, "the population")
	indexes := UserEventIndexes(tb)
	exec("TRUNCATE contacts, user_events, bucket_memberships, bucket_configs, bucket_event_outbox")
	exec("DROP INDEX IF EXISTS user_events_user_event_occurred_idx, user_events_idempotency_key_idx, user_events_event_occurred_user_idx")
	// The primary key too: its random uuids make every insert dirty a page
	// of their own, and past a million users the load writes them out as
	// fast as it inserts (80 000 000 events did not load in an hour).
	exec("ALTER TABLE user_events DROP CONSTRAINT IF EXISTS user_events_pkey")
	n, a, pw, now := p.Users, p.Active, p.Power, p.Now
	exec("INSERT INTO contacts (external_id, properties) SELECT 'u' || i, '{}' FROM generate_series(1, ?) i", n)
	exec(`INSERT INTO user_events (user_id, event, occurred_at)
		SELECT 'u' || i, 'app.active', ?::timestamptz - (CASE WHEN k = 1 THEN random() * 6 ELSE random() * 60 END) * interval '1 day'
		FROM generate_series(1, ?) i, generate_series(1, 12) k`, now, a)
	exec(`INSERT INTO user_events (user_id, event, occurred_at)
		SELECT 'u' || i, 'app.active', ?::timestamptz - interval '7 days 1 hour' - random() * 53 * interval '1 day'
		FROM generate_series(?, ?) i, generate_series(1, 8) k`, now, a+1, n)
	exec(`INSERT INTO user_events (user_id, event, occurred_at)
		SELECT 'u' || i, 'key.action', ?::timestamptz - random() * 29 * interval '1 day'
		FROM generate_series(1, ?) i, generate_series(1, 12) k`, now, pw)
	exec(`INSERT INTO user_events (user_id, event, occurred_at)
		SELECT 'u' || i, 'key.action', ?::timestamptz - random() * 60 * interval '1 day'
		FROM generate_series(?, ?) i, generate_series(1, 5) k`, now, pw+1, n)
	exec(`INSERT INTO user_events (user_id, event, occurred_at)
		SELECT 'u' || i, 'signup', ?::timestamptz - interval '60 days' FROM generate_series(1, ?) i`, now, n)
	seeded := a*12 + (n-a)*8 + pw*12 + (n-pw)*5 + n
	purchases := n * 126 / 100
	pageViews := 20*n - seeded - purchases
	for _, ev := range []struct {
		name  string
		count int
	}{{"page.view", pageViews}, {"purchase", purchases}} {
		exec(`INSERT INTO user_events (user_id, event, occurred_at)
			SELECT 'u' || (1 + floor(? * random() ^ 2))::int, ?, ?::timestamptz - random() * 60 * interval '1 day'
			FROM generate_series(1, ?) j`, n, ev.name, now, ev.count)
	}
	exec("ALTER TABLE user_events ADD CONSTRAINT user_events_pkey PRIMARY KEY (id)")
	for _, def := range indexes {
		exec(def)
	}
	p.SeedMemberships(tb, conn)
	exec("VACUUM ANALYZE")
}

// SeedMemberships (re)writes the seeded memberships of dormant and power,
// as SeedPopulation leaves them: a benchmark that replaces them (a
// backfill from scratch) calls it when it is done, so that the benchmarks
// after it find the population as seeded.
func (p Population) SeedMemberships(tb testing.TB, conn *bun.DB) {
	tb.Helper()
	exec := seeder(tb, conn, "the memberships")
	n, a, pw, now := p.Users, p.Active, p.Power, p.Now
	exec("DELETE FROM bucket_memberships WHERE bucket_id IN ('dormant', 'power')")
	exec(`INSERT INTO bucket_memberships (user_id, bucket_id, entered_at, last_evaluated_at, entry_count, source, created_at, updated_at)
		SELECT 'u' || i, 'dormant', ?::timestamptz - interval '30 days', NULL, 1, 'backfill', ?, ? FROM generate_series(?, ?) i`,
		now, now, now, a+1, n)
	exec(`INSERT INTO bucket_memberships (user_id, bucket_id, entered_at, entry_count, source, created_at, updated_at)
		SELECT 'u' || i, 'power', ?::timestamptz - interval '20 days', 1, 'backfill', ?, ? FROM generate_series(1, ?) i`,
		now, now, now, pw)
	exec("VACUUM ANALYZE bucket_memberships")
}

// seeder returns a statement runner that fails tb, naming what it seeds.
func seeder(tb testing.TB, conn *bun.DB, what string) func(query string, args ...any) {
	return func(query string, args ...any) {
		tb.Helper()
		if _, err := conn.NewRaw(query, args...).Exec(context.Background()); err != nil {
			tb.Fatalf("seeding %s: %v\n%s", what, err, query)
		}
	}
}

// UserEventIndexes returns the migrations' CREATE INDEX statements of user_events.
func UserEventIndexes(tb testing.TB) []string {
	var out []string
	err := fs.WalkDir(db.MigrationFiles, ".", func(path string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		data, err := fs.ReadFile(db.MigrationFiles, path)
		for _, stmt := range strings.Split(string(data), ";") {
			stmt = strings.TrimSpace(stmt)
			if strings.Contains(stmt, "INDEX IF NOT EXISTS") && strings.Contains(stmt, " ON user_events ") {
				out = append(out, stmt)
			}
		}
		return err
	})
	if err != nil || len(out) != 3 {
		tb.Fatalf("finding the user_events indexes in the migrations: %v (found %d)", err, len(out))
	}
	return out
}
