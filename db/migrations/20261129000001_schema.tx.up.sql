-- The Hogsend-compatible schema (contract §4). Every statement is idempotent,
-- so this runs unchanged on an empty database and on one that already holds
-- Hogsend's tables: missing columns and indexes are added, nothing existing
-- is rewritten.

DO $$ BEGIN
  CREATE TYPE bucket_membership_status AS ENUM ('active', 'left');
EXCEPTION WHEN duplicate_object THEN NULL; END $$;
DO $$ BEGIN
  CREATE TYPE journey_status AS ENUM ('active', 'waiting', 'completed', 'failed', 'exited');
EXCEPTION WHEN duplicate_object THEN NULL; END $$;
DO $$ BEGIN
  CREATE TYPE import_job_status AS ENUM ('pending', 'processing', 'completed', 'failed');
EXCEPTION WHEN duplicate_object THEN NULL; END $$;

CREATE TABLE IF NOT EXISTS contacts (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid()
);
ALTER TABLE contacts
  ADD COLUMN IF NOT EXISTS organization_id text,
  ADD COLUMN IF NOT EXISTS external_id text,
  ADD COLUMN IF NOT EXISTS email text,
  ADD COLUMN IF NOT EXISTS properties jsonb DEFAULT '{}',
  ADD COLUMN IF NOT EXISTS timezone text,
  ADD COLUMN IF NOT EXISTS first_seen_at timestamptz NOT NULL DEFAULT now(),
  ADD COLUMN IF NOT EXISTS last_seen_at timestamptz NOT NULL DEFAULT now(),
  ADD COLUMN IF NOT EXISTS deleted_at timestamptz,
  ADD COLUMN IF NOT EXISTS created_at timestamptz NOT NULL DEFAULT now(),
  ADD COLUMN IF NOT EXISTS updated_at timestamptz NOT NULL DEFAULT now();
CREATE UNIQUE INDEX IF NOT EXISTS contacts_external_id_unique_idx
  ON contacts (external_id) WHERE external_id IS NOT NULL AND deleted_at IS NULL;
CREATE INDEX IF NOT EXISTS contacts_email_idx ON contacts (email);

CREATE TABLE IF NOT EXISTS user_events (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  user_id text NOT NULL,
  event text NOT NULL
);
ALTER TABLE user_events
  ADD COLUMN IF NOT EXISTS organization_id text,
  ADD COLUMN IF NOT EXISTS properties jsonb,
  ADD COLUMN IF NOT EXISTS idempotency_key text,
  ADD COLUMN IF NOT EXISTS source text,
  ADD COLUMN IF NOT EXISTS occurred_at timestamptz NOT NULL DEFAULT now();
CREATE INDEX IF NOT EXISTS user_events_user_event_occurred_idx ON user_events (user_id, event, occurred_at);
CREATE UNIQUE INDEX IF NOT EXISTS user_events_idempotency_key_idx ON user_events (idempotency_key);
-- ours: the set-based sweeps scan one event's window across all users.
CREATE INDEX IF NOT EXISTS user_events_event_occurred_user_idx ON user_events (event, occurred_at) INCLUDE (user_id);

CREATE TABLE IF NOT EXISTS bucket_memberships (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  user_id text NOT NULL,
  bucket_id text NOT NULL
);
ALTER TABLE bucket_memberships
  ADD COLUMN IF NOT EXISTS organization_id text,
  ADD COLUMN IF NOT EXISTS user_email text,
  ADD COLUMN IF NOT EXISTS status bucket_membership_status NOT NULL DEFAULT 'active',
  ADD COLUMN IF NOT EXISTS entered_at timestamptz NOT NULL DEFAULT now(),
  ADD COLUMN IF NOT EXISTS left_at timestamptz,
  ADD COLUMN IF NOT EXISTS expires_at timestamptz,
  ADD COLUMN IF NOT EXISTS max_dwell_at timestamptz,
  ADD COLUMN IF NOT EXISTS last_evaluated_at timestamptz,
  ADD COLUMN IF NOT EXISTS entry_count integer NOT NULL DEFAULT 1,
  ADD COLUMN IF NOT EXISTS source text,
  ADD COLUMN IF NOT EXISTS context jsonb DEFAULT '{}',
  ADD COLUMN IF NOT EXISTS deleted_at timestamptz,
  ADD COLUMN IF NOT EXISTS created_at timestamptz NOT NULL DEFAULT now(),
  ADD COLUMN IF NOT EXISTS updated_at timestamptz NOT NULL DEFAULT now();
CREATE UNIQUE INDEX IF NOT EXISTS uq_user_bucket_active
  ON bucket_memberships (user_id, bucket_id) WHERE status = 'active' AND deleted_at IS NULL;
CREATE INDEX IF NOT EXISTS bucket_memberships_bucket_id_status_idx ON bucket_memberships (bucket_id, status);
CREATE INDEX IF NOT EXISTS bucket_memberships_user_id_idx ON bucket_memberships (user_id);
CREATE INDEX IF NOT EXISTS bucket_memberships_last_evaluated_idx ON bucket_memberships (last_evaluated_at);
CREATE INDEX IF NOT EXISTS bucket_memberships_expires_at_idx ON bucket_memberships (expires_at);
CREATE INDEX IF NOT EXISTS bucket_memberships_max_dwell_at_idx ON bucket_memberships (max_dwell_at);

CREATE TABLE IF NOT EXISTS bucket_configs (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  bucket_id text NOT NULL
);
ALTER TABLE bucket_configs
  ADD COLUMN IF NOT EXISTS enabled boolean NOT NULL DEFAULT true,
  ADD COLUMN IF NOT EXISTS criteria_hash text,
  ADD COLUMN IF NOT EXISTS created_at timestamptz NOT NULL DEFAULT now(),
  ADD COLUMN IF NOT EXISTS updated_at timestamptz NOT NULL DEFAULT now();
CREATE UNIQUE INDEX IF NOT EXISTS bucket_configs_bucket_id_idx ON bucket_configs (bucket_id);

CREATE TABLE IF NOT EXISTS journey_states (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  user_id text NOT NULL,
  user_email text NOT NULL,
  journey_id text NOT NULL,
  current_node_id text NOT NULL
);
ALTER TABLE journey_states
  ADD COLUMN IF NOT EXISTS organization_id text,
  ADD COLUMN IF NOT EXISTS status journey_status NOT NULL DEFAULT 'active',
  ADD COLUMN IF NOT EXISTS hatchet_run_id text,
  ADD COLUMN IF NOT EXISTS context jsonb DEFAULT '{}',
  ADD COLUMN IF NOT EXISTS error_message text,
  ADD COLUMN IF NOT EXISTS entry_count integer NOT NULL DEFAULT 1,
  ADD COLUMN IF NOT EXISTS completed_at timestamptz,
  ADD COLUMN IF NOT EXISTS exited_at timestamptz,
  ADD COLUMN IF NOT EXISTS deleted_at timestamptz,
  ADD COLUMN IF NOT EXISTS created_at timestamptz NOT NULL DEFAULT now(),
  ADD COLUMN IF NOT EXISTS updated_at timestamptz NOT NULL DEFAULT now();
CREATE UNIQUE INDEX IF NOT EXISTS uq_user_journey_active
  ON journey_states (user_id, journey_id) WHERE status IN ('active', 'waiting');
CREATE INDEX IF NOT EXISTS journey_states_user_id_idx ON journey_states (user_id);

CREATE TABLE IF NOT EXISTS import_jobs (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  format text NOT NULL
);
ALTER TABLE import_jobs
  ADD COLUMN IF NOT EXISTS file_name text,
  ADD COLUMN IF NOT EXISTS status import_job_status NOT NULL DEFAULT 'pending',
  ADD COLUMN IF NOT EXISTS total_rows integer,
  ADD COLUMN IF NOT EXISTS processed_rows integer NOT NULL DEFAULT 0,
  ADD COLUMN IF NOT EXISTS failed_rows integer NOT NULL DEFAULT 0,
  ADD COLUMN IF NOT EXISTS errors jsonb,
  ADD COLUMN IF NOT EXISTS created_at timestamptz NOT NULL DEFAULT now(),
  ADD COLUMN IF NOT EXISTS updated_at timestamptz NOT NULL DEFAULT now();

-- ours: the transactional outbox of Hatchet pushes.
CREATE TABLE IF NOT EXISTS bucket_event_outbox (
  id bigserial PRIMARY KEY,
  event_key text NOT NULL,
  payload jsonb NOT NULL,
  additional_metadata jsonb,
  idempotency_key text,
  created_at timestamptz NOT NULL DEFAULT now(),
  available_at timestamptz NOT NULL DEFAULT now(),
  attempts integer NOT NULL DEFAULT 0,
  last_error text,
  dispatched_at timestamptz
);
CREATE UNIQUE INDEX IF NOT EXISTS bucket_event_outbox_idempotency_key_idx
  ON bucket_event_outbox (idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS bucket_event_outbox_pending_idx
  ON bucket_event_outbox (available_at, id) WHERE dispatched_at IS NULL;
