package dbtest_test

import (
	"context"
	"net/url"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/bucketworker/bucket-worker/db"
	"github.com/bucketworker/bucket-worker/db/dbtest"
)

// A kept database of an older schema is migrated forward with its data,
// as a production database would be, rather than seeded again; one that
// applied a migration we no longer have is replaced by a fresh one.
func TestKeptMigratesAnOlderDatabaseForward(t *testing.T) {
	ctx := context.Background()
	admin, err := db.Open(ctx, dbtest.AdminURL())
	require.NoError(t, err)
	defer admin.Close()

	for _, tc := range []struct {
		name    string
		older   string // what makes the database older
		created bool
	}{
		{"forward", "DELETE FROM bucket_worker_migrations WHERE name = (SELECT max(name) FROM bucket_worker_migrations)", false},
		{"unknown", "INSERT INTO bucket_worker_migrations (name, group_id, migrated_at) VALUES ('29991231000099', 9, now())", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			prefix := "bw_kepttest_" + tc.name
			old := prefix + "_000000000000"
			t.Cleanup(func() {
				var names []string
				_ = admin.NewRaw("SELECT datname FROM pg_database WHERE datname LIKE ?", prefix+"\\_%").Scan(ctx, &names)
				for _, n := range names {
					_, _ = admin.ExecContext(ctx, "DROP DATABASE IF EXISTS "+n+" WITH (FORCE)")
				}
			})
			_, err := admin.ExecContext(ctx, "CREATE DATABASE "+old)
			require.NoError(t, err)
			u, err := url.Parse(dbtest.AdminURL())
			require.NoError(t, err)
			u.Path = "/" + old
			oldConn, err := db.Open(ctx, u.String())
			require.NoError(t, err)
			_, err = db.Migrate(ctx, oldConn)
			require.NoError(t, err)
			for _, q := range []string{
				"CREATE TABLE seeded_marker ()",
				tc.older,
			} {
				_, err := oldConn.ExecContext(ctx, q)
				require.NoError(t, err, q)
			}
			oldConn.Close()

			conn, _, created := dbtest.Kept(t, prefix)
			require.Equal(t, tc.created, created)
			var marker bool
			require.NoError(t, conn.QueryRowContext(ctx, "SELECT to_regclass('seeded_marker') IS NOT NULL").Scan(&marker))
			require.Equal(t, !tc.created, marker, "the data is kept when migrated forward, and only then")
			var applied []string
			require.NoError(t, conn.NewRaw("SELECT name FROM bucket_worker_migrations ORDER BY name").Scan(ctx, &applied))
			current, err := db.MigrationNames()
			require.NoError(t, err)
			require.Equal(t, current, applied, "the schema is the current one")
			var gone bool
			require.NoError(t, admin.QueryRowContext(ctx, "SELECT NOT EXISTS (SELECT FROM pg_database WHERE datname = ?)", old).Scan(&gone))
			require.True(t, gone, "the older database is gone")
		})
	}
}
