package dbtest

import (
	"context"
	"testing"

	"github.com/bucketworker/bucket-worker/db"
)

// TestDropDatabaseClosesSessions drops a database that a session is still
// using, without FORCE: the session is closed first, or the drop fails.
func TestDropDatabaseClosesSessions(t *testing.T) {
	ctx := context.Background()
	admin, err := db.Open(ctx, AdminURL())
	if err != nil {
		t.Skipf("no test server (run scripts/stack up): %v", err)
	}
	defer admin.Close()
	name := "bw_test_" + randomSuffix()
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatal(err)
	}
	user, err := db.Open(ctx, withDatabase(AdminURL(), name))
	if err != nil {
		t.Fatal(err)
	}
	defer user.Close()
	if err := user.PingContext(ctx); err != nil {
		t.Fatal(err)
	}

	if err := dropDatabase(ctx, admin, name); err != nil {
		t.Fatalf("dropping %s with a session open: %v", name, err)
	}
	var exists bool
	if err := admin.QueryRowContext(ctx, "SELECT EXISTS (SELECT FROM pg_database WHERE datname = ?)", name).Scan(&exists); err != nil {
		t.Fatal(err)
	}
	if exists {
		t.Fatalf("%s still exists", name)
	}
}
