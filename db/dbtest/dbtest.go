// Package dbtest gives tests a real, freshly migrated PostgreSQL database.
//
// It connects with TEST_DATABASE_URL (a role that may create databases;
// scripts/stack up writes one into .stack/worker.env). The first call of a
// test binary migrates a template database for the current migrations;
// every call then gets its own copy of it, dropped when the test ends.
package dbtest

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"github.com/bucketworker/bucket-worker/db"
)

var (
	templateOnce sync.Once
	templateName string
	templateErr  error
)

// AdminURL is the connection string of the test server's maintenance
// database: TEST_DATABASE_URL, or the local stack's when it is unset.
func AdminURL() string {
	if u := os.Getenv("TEST_DATABASE_URL"); u != "" {
		return u
	}
	if u := stackEnv("TEST_DATABASE_URL"); u != "" {
		return u
	}
	return "postgres://bucket_worker:bucket_worker@127.0.0.1:5432/postgres?sslmode=disable"
}

// stackEnv reads a key of .stack/worker.env at the module root.
func stackEnv(key string) string {
	dir, _ := os.Getwd()
	for ; dir != filepath.Dir(dir); dir = filepath.Dir(dir) {
		data, err := os.ReadFile(filepath.Join(dir, ".stack", "worker.env"))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(data), "\n") {
			if v, ok := strings.CutPrefix(line, key+"="); ok {
				return v
			}
		}
	}
	return ""
}

// New returns a connection to a new database holding the worker's schema,
// dropped when the test ends. The database's URL is returned too, for tests
// that start the worker binary.
func New(t testing.TB) (*bun.DB, string) {
	t.Helper()
	ctx := context.Background()
	templateOnce.Do(func() { templateName, templateErr = ensureTemplate(ctx) })
	if templateErr != nil {
		t.Fatalf("preparing the test database (is PostgreSQL up? run scripts/stack up): %v", templateErr)
	}
	admin, err := db.Open(ctx, AdminURL())
	if err != nil {
		t.Fatalf("connecting to the test server (run scripts/stack up): %v", err)
	}
	defer admin.Close()

	name := "bw_test_" + randomSuffix()
	if _, err := admin.ExecContext(ctx, fmt.Sprintf("CREATE DATABASE %s TEMPLATE %s", name, templateName)); err != nil {
		t.Fatalf("creating database %s: %v", name, err)
	}
	dbURL := withDatabase(AdminURL(), name)
	conn, err := db.Open(ctx, dbURL)
	if err != nil {
		t.Fatalf("connecting to %s: %v", name, err)
	}
	t.Cleanup(func() {
		conn.Close()
		admin, err := db.Open(ctx, AdminURL())
		if err != nil {
			t.Logf("dropping %s: %v", name, err)
			return
		}
		defer admin.Close()
		if err := dropDatabase(ctx, admin, name); err != nil {
			t.Logf("dropping %s: %v", name, err)
		}
	})
	return conn, dbURL
}

// Kept returns a connection to a database that outlives the test, and its
// URL: named prefix plus the schema's version. Benchmarks keep their
// seeded data in one between runs. When the current version is missing, a
// database of an older version with the same prefix is renamed and
// migrated forward, as a production database would be, its data kept;
// failing that (none, or one that applied a migration that is gone) a new
// one is created from the migrated template, the older ones dropped, and
// created is true.
func Kept(tb testing.TB, prefix string) (conn *bun.DB, dbURL string, created bool) {
	tb.Helper()
	ctx := context.Background()
	templateOnce.Do(func() { templateName, templateErr = ensureTemplate(ctx) })
	if templateErr != nil {
		tb.Fatalf("preparing the test database (is PostgreSQL up? run scripts/stack up): %v", templateErr)
	}
	admin, err := db.Open(ctx, AdminURL())
	if err != nil {
		tb.Fatalf("connecting to the test server (run scripts/stack up): %v", err)
	}
	defer admin.Close()
	name := prefix + "_" + strings.TrimPrefix(templateName, "bw_template_")
	var exists bool
	if err := admin.QueryRowContext(ctx, "SELECT EXISTS (SELECT FROM pg_database WHERE datname = ?)", name).Scan(&exists); err != nil {
		tb.Fatalf("looking for database %s: %v", name, err)
	}
	if !exists {
		var stale []string
		if err := admin.NewRaw("SELECT datname FROM pg_database WHERE datname LIKE ?", prefix+"\\_%").Scan(ctx, &stale); err != nil {
			tb.Fatalf("looking for older %s databases: %v", prefix, err)
		}
		if len(stale) == 1 && migrateForward(ctx, tb, admin, stale[0], name) {
			stale = nil
			exists = true
		}
		for _, old := range stale {
			if err := dropDatabase(ctx, admin, old); err != nil {
				tb.Fatalf("dropping %s: %v", old, err)
			}
		}
	}
	if !exists {
		if _, err := admin.ExecContext(ctx, fmt.Sprintf("CREATE DATABASE %s TEMPLATE %s", name, templateName)); err != nil {
			tb.Fatalf("creating database %s: %v", name, err)
		}
	}
	dbURL = withDatabase(AdminURL(), name)
	conn, err = db.Open(ctx, dbURL)
	if err != nil {
		tb.Fatalf("connecting to %s: %v", name, err)
	}
	tb.Cleanup(func() { conn.Close() })
	return conn, dbURL, !exists
}

// migrateForward renames the kept database old to name and applies the
// migrations it lacks, if every migration it applied is still one of
// ours; it reports whether it did.
func migrateForward(ctx context.Context, tb testing.TB, admin *bun.DB, old, name string) bool {
	tb.Helper()
	oldDB, err := db.Open(ctx, withDatabase(AdminURL(), old))
	if err != nil {
		tb.Fatalf("connecting to %s: %v", old, err)
	}
	var applied []string
	err = oldDB.NewRaw("SELECT name FROM bucket_worker_migrations").Scan(ctx, &applied)
	oldDB.Close()
	if err != nil {
		return false
	}
	current, err := db.MigrationNames()
	if err != nil {
		tb.Fatal(err)
	}
	for _, m := range applied {
		if !slices.Contains(current, m) {
			return false
		}
	}
	// The rename stops an autovacuum worker on the database itself.
	if err := closeSessions(ctx, admin, old); err != nil {
		tb.Fatalf("closing the sessions of %s: %v", old, err)
	}
	if _, err := admin.ExecContext(ctx, fmt.Sprintf("ALTER DATABASE %s RENAME TO %s", old, name)); err != nil {
		tb.Fatalf("renaming %s to %s: %v", old, name, err)
	}
	conn, err := db.Open(ctx, withDatabase(AdminURL(), name))
	if err != nil {
		tb.Fatalf("connecting to %s: %v", name, err)
	}
	defer conn.Close()
	start := time.Now()
	if _, err := db.Migrate(ctx, conn); err != nil {
		tb.Fatalf("migrating %s forward: %v", name, err)
	}
	tb.Logf("migrated %s forward to %s in %s", old, name, time.Since(start).Round(time.Millisecond))
	return true
}

// dropDatabase drops the database, if it exists, once its client sessions
// are closed. Not WITH (FORCE), which terminates every backend on the
// database: a role that is not a superuser cannot terminate an autovacuum
// worker ("must be a member of the role whose process is being
// terminated"), and a plain DROP stops it itself.
func dropDatabase(ctx context.Context, idb bun.IConn, name string) error {
	if err := closeSessions(ctx, idb, name); err != nil {
		return err
	}
	_, err := idb.ExecContext(ctx, "DROP DATABASE IF EXISTS "+name)
	return err
}

// closeSessions terminates the client sessions on the database, and no
// other backend (see dropDatabase). DROP DATABASE and ALTER DATABASE …
// RENAME wait a few seconds for a terminated session to end.
func closeSessions(ctx context.Context, idb bun.IConn, name string) error {
	_, err := idb.ExecContext(ctx, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = ? AND backend_type = 'client backend'", name)
	return err
}

// Empty returns the URL of a new database without any schema, dropped when
// the test ends; for migration tests.
func Empty(t testing.TB) string {
	t.Helper()
	ctx := context.Background()
	admin, err := db.Open(ctx, AdminURL())
	if err != nil {
		t.Fatalf("connecting to the test server (run scripts/stack up): %v", err)
	}
	defer admin.Close()
	name := "bw_test_" + randomSuffix()
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("creating database %s: %v", name, err)
	}
	t.Cleanup(func() {
		admin, err := db.Open(ctx, AdminURL())
		if err != nil {
			return
		}
		defer admin.Close()
		_ = dropDatabase(ctx, admin, name)
	})
	return withDatabase(AdminURL(), name)
}

// ensureTemplate creates and migrates the template database of the current
// migrations once, whichever test binary gets there first.
func ensureTemplate(ctx context.Context) (string, error) {
	sum := sha256.New()
	_ = fs.WalkDir(db.MigrationFiles, ".", func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			data, _ := fs.ReadFile(db.MigrationFiles, p)
			sum.Write([]byte(p))
			sum.Write(data)
		}
		return nil
	})
	name := "bw_template_" + hex.EncodeToString(sum.Sum(nil))[:12]

	admin, err := db.Open(ctx, AdminURL())
	if err != nil {
		return "", err
	}
	defer admin.Close()
	conn, err := admin.Conn(ctx)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	// Test binaries of several packages run at once: one builds the template.
	if _, err := conn.ExecContext(ctx, "SELECT pg_advisory_lock(hashtext('bucket_worker_test_template'))"); err != nil {
		return "", err
	}
	defer conn.ExecContext(ctx, "SELECT pg_advisory_unlock(hashtext('bucket_worker_test_template'))") //nolint:errcheck

	var exists bool
	if err := conn.QueryRowContext(ctx, "SELECT EXISTS (SELECT FROM pg_database WHERE datname = ?)", name).Scan(&exists); err != nil {
		return "", err
	}
	if exists {
		return name, nil
	}
	building := name + "_building"
	if err := dropDatabase(ctx, conn, building); err != nil {
		return "", err
	}
	if _, err := conn.ExecContext(ctx, "CREATE DATABASE "+building); err != nil {
		return "", err
	}
	tdb, err := db.Open(ctx, withDatabase(AdminURL(), building))
	if err != nil {
		return "", err
	}
	_, err = db.Migrate(ctx, tdb)
	tdb.Close()
	if err != nil {
		return "", fmt.Errorf("migrating the template: %w", err)
	}
	if _, err := conn.ExecContext(ctx, fmt.Sprintf("ALTER DATABASE %s RENAME TO %s", building, name)); err != nil {
		return "", err
	}
	return name, nil
}

func withDatabase(rawURL, name string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return rawURL
	}
	u.Path = "/" + name
	return u.String()
}

func randomSuffix() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// The fixtures of the tests: typed rows, inserted and updated as given —
// which no path of the engine writes that way — so that a change of the
// schema breaks a test's fixtures where it is compiled.

// Users names n users prefix1 … prefixN.
func Users(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%d", prefix, i+1)
	}
	return out
}

// Contacts returns a live contact row for each user, with the properties
// (a JSON object).
func Contacts(users []string, properties string) []db.Contact {
	rows := make([]db.Contact, len(users))
	for i := range users {
		rows[i] = db.Contact{ExternalID: &users[i], Properties: json.RawMessage(properties)}
	}
	return rows
}

// Events returns one event row named event at at for each user.
func Events(users []string, event string, at time.Time) []db.UserEvent {
	rows := make([]db.UserEvent, len(users))
	for i, u := range users {
		rows[i] = db.UserEvent{UserID: u, Event: event, OccurredAt: at}
	}
	return rows
}

// Members returns, for each user, an active membership row of the bucket
// entered at enteredAt, the user's first (epoch 1).
func Members(users []string, bucketID string, enteredAt time.Time) []db.Membership {
	rows := make([]db.Membership, len(users))
	for i, u := range users {
		rows[i] = db.Membership{UserID: u, BucketID: bucketID, Status: db.StatusActive, EnteredAt: enteredAt, EntryCount: 1}
	}
	return rows
}

// InsertContacts inserts contact rows as given.
func InsertContacts(ctx context.Context, idb bun.IDB, rows []db.Contact) error {
	return insertAll(ctx, idb, rows, "contacts")
}

// InsertContact inserts a contact row as given and sets its id.
func InsertContact(ctx context.Context, idb bun.IDB, c *db.Contact) error {
	if _, err := idb.NewInsert().Model(c).Returning("id").Exec(ctx); err != nil {
		return fmt.Errorf("inserting a contact: %w", err)
	}
	return nil
}

// InsertMemberships inserts membership rows as given.
func InsertMemberships(ctx context.Context, idb bun.IDB, rows []db.Membership) error {
	return insertAll(ctx, idb, rows, "memberships")
}

// InsertUserEvents inserts events as given.
func InsertUserEvents(ctx context.Context, idb bun.IDB, events []db.UserEvent) error {
	return insertAll(ctx, idb, events, "user events")
}

// InsertJourneyStates inserts journey state rows as given.
func InsertJourneyStates(ctx context.Context, idb bun.IDB, rows []db.JourneyState) error {
	return insertAll(ctx, idb, rows, "journey states")
}

// insertChunk is how many rows one insert of insertAll carries.
const insertChunk = 5000

// insertAll inserts the rows as given, insertChunk per statement.
func insertAll[T any](ctx context.Context, idb bun.IDB, rows []T, what string) error {
	for chunk := range slices.Chunk(rows, insertChunk) {
		if _, err := idb.NewInsert().Model(&chunk).Exec(ctx); err != nil {
			return fmt.Errorf("inserting %d %s: %w", len(chunk), what, err)
		}
	}
	return nil
}

// UpdateContact writes every column of the contact row with its id.
func UpdateContact(ctx context.Context, idb bun.IDB, c db.Contact) error {
	return updateRow(ctx, idb, &c, "contact")
}

// UpdateMembership writes every column of the membership row with its id.
func UpdateMembership(ctx context.Context, idb bun.IDB, m db.Membership) error {
	return updateRow(ctx, idb, &m, "membership")
}

// UpdateOutbox writes every column of the outbox rows, by id.
func UpdateOutbox(ctx context.Context, idb bun.IDB, rows []db.OutboxEvent) error {
	for i := range rows {
		if err := updateRow(ctx, idb, &rows[i], "outbox row"); err != nil {
			return err
		}
	}
	return nil
}

func updateRow[T any](ctx context.Context, idb bun.IDB, row *T, what string) error {
	res, err := idb.NewUpdate().Model(row).WherePK().Exec(ctx)
	if err != nil {
		return fmt.Errorf("updating a %s: %w", what, err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return fmt.Errorf("updating a %s: %d rows have its id", what, n)
	}
	return nil
}

// DeleteAll deletes every row of the model's table, such as
// (*db.ExpiryTimer)(nil).
func DeleteAll[T any](ctx context.Context, idb bun.IDB, model *T) error {
	if _, err := idb.NewDelete().Model(model).Where("true").Exec(ctx); err != nil {
		return fmt.Errorf("deleting every %T: %w", model, err)
	}
	return nil
}

// ListOutbox returns every outbox row in id order.
func ListOutbox(ctx context.Context, idb bun.IDB) ([]db.OutboxEvent, error) {
	var rows []db.OutboxEvent
	if err := idb.NewSelect().Model(&rows).OrderExpr("o.id").Scan(ctx); err != nil {
		return nil, fmt.Errorf("listing the outbox: %w", err)
	}
	return rows, nil
}
