package db_test

import (
	"context"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/bucketworker/bucket-worker/db"
	"github.com/bucketworker/bucket-worker/db/dbtest"
)

func TestMigrateTwiceOnEmptyDatabase(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	conn, err := db.Open(ctx, dbtest.Empty(t))
	require.NoError(t, err)
	defer conn.Close()

	applied, err := db.Migrate(ctx, conn)
	require.NoError(t, err)
	require.NotEmpty(t, applied)

	applied, err = db.Migrate(ctx, conn)
	require.NoError(t, err)
	require.Empty(t, applied, "a second run finds nothing to do")

	for _, table := range []string{"contacts", "user_events", "bucket_memberships", "bucket_configs",
		"journey_states", "import_jobs", "bucket_event_outbox", "bucket_worker_migrations", "bucket_worker_migration_locks"} {
		var exists bool
		require.NoError(t, conn.QueryRowContext(ctx, "SELECT to_regclass(?) IS NOT NULL", table).Scan(&exists))
		require.True(t, exists, table)
	}
}

func TestMigrateConcurrently(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := dbtest.Empty(t)
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := db.Open(ctx, url)
			if err != nil {
				errs[i] = err
				return
			}
			defer conn.Close()
			_, errs[i] = db.Migrate(ctx, conn)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
}

// hogsendDDL is Hogsend's own schema: contract §4 without the parts marked
// "ours", plus columns Hogsend added later.
const hogsendDDL = `
CREATE TYPE bucket_membership_status AS ENUM ('active','left');
CREATE TYPE journey_status AS ENUM ('active','waiting','completed','failed','exited');
CREATE TYPE import_job_status AS ENUM ('pending','processing','completed','failed');
CREATE TABLE contacts (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(), organization_id text, external_id text, email text,
  properties jsonb DEFAULT '{}', timezone text,
  first_seen_at timestamptz NOT NULL DEFAULT now(), last_seen_at timestamptz NOT NULL DEFAULT now(),
  deleted_at timestamptz, created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now(),
  lifecycle_stage text);
CREATE UNIQUE INDEX contacts_external_id_unique_idx ON contacts (external_id) WHERE external_id IS NOT NULL AND deleted_at IS NULL;
CREATE INDEX contacts_email_idx ON contacts (email);
CREATE TABLE user_events (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(), organization_id text, user_id text NOT NULL, event text NOT NULL,
  properties jsonb, idempotency_key text, source text, occurred_at timestamptz NOT NULL DEFAULT now(),
  contact_id uuid);
CREATE INDEX user_events_user_event_occurred_idx ON user_events (user_id, event, occurred_at);
CREATE UNIQUE INDEX user_events_idempotency_key_idx ON user_events (idempotency_key);
CREATE TABLE bucket_memberships (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(), organization_id text, user_id text NOT NULL, user_email text,
  bucket_id text NOT NULL, status bucket_membership_status NOT NULL DEFAULT 'active',
  entered_at timestamptz NOT NULL DEFAULT now(), left_at timestamptz, expires_at timestamptz,
  max_dwell_at timestamptz, last_evaluated_at timestamptz, entry_count integer NOT NULL DEFAULT 1,
  source text, context jsonb DEFAULT '{}', deleted_at timestamptz,
  created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now(),
  contact_id uuid);
CREATE UNIQUE INDEX uq_user_bucket_active ON bucket_memberships (user_id, bucket_id) WHERE status='active' AND deleted_at IS NULL;
CREATE INDEX bucket_memberships_bucket_id_status_idx ON bucket_memberships (bucket_id, status);
CREATE TABLE bucket_configs (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(), bucket_id text NOT NULL, enabled boolean NOT NULL DEFAULT true,
  criteria_hash text, created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now());
CREATE UNIQUE INDEX bucket_configs_bucket_id_idx ON bucket_configs (bucket_id);
CREATE TABLE journey_states (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(), organization_id text, user_id text NOT NULL, user_email text NOT NULL,
  journey_id text NOT NULL, current_node_id text NOT NULL, status journey_status NOT NULL DEFAULT 'active',
  hatchet_run_id text, context jsonb DEFAULT '{}', error_message text, entry_count integer NOT NULL DEFAULT 1,
  completed_at timestamptz, exited_at timestamptz, deleted_at timestamptz,
  created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now());
CREATE UNIQUE INDEX uq_user_journey_active ON journey_states (user_id, journey_id) WHERE status IN ('active','waiting');
CREATE TABLE import_jobs (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(), file_name text, format text NOT NULL,
  status import_job_status NOT NULL DEFAULT 'pending', total_rows integer,
  processed_rows integer NOT NULL DEFAULT 0, failed_rows integer NOT NULL DEFAULT 0, errors jsonb,
  created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE drizzle_migrations (id serial PRIMARY KEY, hash text NOT NULL);

INSERT INTO contacts (external_id, email, properties, lifecycle_stage) VALUES ('u1', 'a@example.com', '{"plan":"pro"}', 'customer');
INSERT INTO user_events (user_id, event, idempotency_key, contact_id) VALUES ('u1', 'app.active', 'k1', gen_random_uuid());
INSERT INTO bucket_memberships (user_id, bucket_id, entry_count, source) VALUES ('u1', 'went-dormant', 3, 'event');
INSERT INTO bucket_configs (bucket_id, enabled, criteria_hash) VALUES ('went-dormant', false, 'abc');
INSERT INTO journey_states (user_id, user_email, journey_id, current_node_id) VALUES ('u1', 'a@example.com', 'winback', 'start');
INSERT INTO import_jobs (file_name, format, status) VALUES ('x.csv', 'csv', 'completed');
INSERT INTO drizzle_migrations (hash) VALUES ('h1');
`

func TestMigrateOnHogsendDatabase(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	conn, err := db.Open(ctx, dbtest.Empty(t))
	require.NoError(t, err)
	defer conn.Close()
	_, err = conn.ExecContext(ctx, hogsendDDL)
	require.NoError(t, err)

	snapshot := func() []string {
		var rows []string
		for _, q := range []string{
			"SELECT to_jsonb(t)::text FROM contacts t",
			"SELECT to_jsonb(t)::text FROM user_events t",
			// The columns of dwell reactions are added, with their defaults.
			"SELECT (to_jsonb(t) - 'dwell_state' - 'dwell_anchor_at')::text FROM bucket_memberships t",
			"SELECT to_jsonb(t)::text FROM bucket_configs t",
			"SELECT to_jsonb(t)::text FROM journey_states t",
			"SELECT to_jsonb(t)::text FROM import_jobs t",
			"SELECT to_jsonb(t)::text FROM drizzle_migrations t",
		} {
			var r []string
			require.NoError(t, conn.NewRaw(q).Scan(ctx, &r))
			require.Len(t, r, 1, q)
			rows = append(rows, r...)
		}
		return rows
	}
	before := snapshot()

	for range 2 {
		_, err := db.Migrate(ctx, conn)
		require.NoError(t, err)
		require.Equal(t, before, snapshot(), "migrations must not touch existing rows")
	}

	// Our additions are there: the outbox and the sweep index.
	var n int
	require.NoError(t, conn.QueryRowContext(ctx, "SELECT count(*) FROM pg_indexes WHERE indexname IN ('user_events_event_occurred_user_idx', 'bucket_event_outbox_claim_idx', 'bucket_memberships_max_dwell_at_idx')").Scan(&n))
	require.Equal(t, 3, n)
	// Hogsend's own migration bookkeeping is untouched.
	require.NoError(t, conn.QueryRowContext(ctx, "SELECT count(*) FROM drizzle_migrations").Scan(&n))
	require.Equal(t, 1, n)
}

// TestMigrateOnHogsendLatest migrates a database made by Hogsend's latest
// migrations (dbtest.HogsendLatest): nothing to add twice, our indexes in
// place, and the contact keys found.
func TestMigrateOnHogsendLatest(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	conn, _ := dbtest.HogsendLatest(t)
	applied, err := db.Migrate(ctx, conn)
	require.NoError(t, err)
	require.Empty(t, applied, "a second run finds nothing to do")

	var n int
	require.NoError(t, conn.QueryRowContext(ctx, "SELECT count(*) FROM pg_indexes WHERE indexname IN ('user_events_event_occurred_user_idx', 'bucket_event_outbox_claim_idx', 'bucket_memberships_evaluation_order_idx', 'bucket_memberships_dwell_order_idx')").Scan(&n))
	require.Equal(t, 4, n)
	// Hogsend's dwell indexes are its own, not doubled under other names.
	require.NoError(t, conn.QueryRowContext(ctx, "SELECT count(*) FROM pg_indexes WHERE tablename = 'bucket_memberships' AND indexdef LIKE '%(bucket_id, status, entered_at)%'").Scan(&n))
	require.Equal(t, 1, n)

	schema, err := db.ReadSchema(ctx, conn)
	require.NoError(t, err)
	require.Equal(t, db.Schema{MembershipContactID: true, EventContactID: true, UniqueContactEmail: true}, schema)

	fresh, _ := dbtest.New(t)
	schema, err = db.ReadSchema(ctx, fresh)
	require.NoError(t, err)
	require.Equal(t, db.Schema{}, schema, "the worker's own schema has no contact_id")
}
