package dbtest

import (
	"context"
	_ "embed"
	"testing"

	"github.com/uptrace/bun"

	"github.com/bucketworker/bucket-worker/db"
)

// HogsendLatestDDL is the schema of the tables the worker shares with
// Hogsend as Hogsend's own migrations leave them at its latest release:
// with contact_id on memberships, events and journey states, the dwell
// columns, and the columns of features the worker does not know.
//
//go:embed testdata/hogsend-latest.sql
var HogsendLatestDDL string

// HogsendLatest returns a connection to a new database made by
// HogsendLatestDDL and then the worker's migrations, dropped when the test
// ends, and its URL.
func HogsendLatest(t testing.TB) (*bun.DB, string) {
	t.Helper()
	ctx := context.Background()
	url := Empty(t)
	conn, err := db.Open(ctx, url)
	if err != nil {
		t.Fatalf("connecting to the Hogsend database: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	if _, err := conn.ExecContext(ctx, HogsendLatestDDL); err != nil {
		t.Fatalf("creating Hogsend's schema: %v", err)
	}
	if _, err := db.Migrate(ctx, conn); err != nil {
		t.Fatalf("migrating the Hogsend database: %v", err)
	}
	return conn, url
}
