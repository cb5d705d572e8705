//go:build e2e

package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bucketworker/bucket-worker/db"
	"github.com/bucketworker/bucket-worker/db/dbtest"
)

// TestBootBackfill starts the worker with a bucket it has never seen: at
// boot it records a job and enqueues bucket-backfill, which materializes the
// matchers through Hatchet without emitting a join.
func TestBootBackfill(t *testing.T) {
	conn, dbURL := dbtest.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	_, err := conn.ExecContext(ctx, `INSERT INTO contacts (external_id, properties) VALUES ('b1', '{"tier":"gold"}'), ('b2', '{"tier":"tin"}')`)
	require.NoError(t, err)
	defsDir := definitions(t, map[string]string{"e2e-gold.yaml": "id: e2e-gold\nname: E2E gold\n" +
		"criteria: {type: property, property: tier, operator: eq, value: gold}\n"})
	w := startWorker(t, "DATABASE_URL="+dbURL, "DEFINITIONS_DIR="+defsDir)

	require.Eventually(t, func() bool {
		var done int
		_ = conn.NewRaw("SELECT count(*) FROM import_jobs WHERE file_name = 'e2e-gold' AND format = 'bucket-backfill' AND status = 'completed'").Scan(ctx, &done)
		return done == 1
	}, 60*time.Second, 200*time.Millisecond, w.Logs())
	members, err := db.ListMemberships(ctx, conn, db.MembershipFilter{BucketID: "e2e-gold", Status: db.StatusActive})
	require.NoError(t, err)
	require.Len(t, members, 1)
	require.Equal(t, "b1", members[0].UserID)
	require.Equal(t, "backfill", *members[0].Source)
	var emitted int
	require.NoError(t, conn.NewRaw("SELECT count(*) FROM user_events WHERE source = 'bucket'").Scan(ctx, &emitted))
	require.Zero(t, emitted)
	var jobs int
	require.NoError(t, conn.NewRaw("SELECT count(*) FROM import_jobs").Scan(ctx, &jobs))
	require.Equal(t, 1, jobs)
}
