-- The tables the worker reads and writes as Hogsend's own migrations leave
-- them at its latest release (packages/db/drizzle, through 0074): written
-- by hand from those migrations, for the tables, columns, enums and
-- indexes the worker meets. Columns of other features (anonymous_id,
-- groups, value, wait_deadline, …) are kept: the worker must not trip
-- over what it does not know.
CREATE TYPE bucket_membership_status AS ENUM ('active', 'left');
CREATE TYPE journey_status AS ENUM ('active', 'waiting', 'completed', 'failed', 'exited', 'held_out');
CREATE TYPE import_job_status AS ENUM ('pending', 'processing', 'completed', 'failed');

CREATE TABLE contacts (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  organization_id text,
  external_id text,
  email text,
  anonymous_id text,
  discord_id text,
  phone text,
  source text,
  sourced_at timestamptz,
  timezone text,
  properties jsonb DEFAULT '{}'::jsonb,
  first_seen_at timestamptz NOT NULL DEFAULT now(),
  last_seen_at timestamptz NOT NULL DEFAULT now(),
  deleted_at timestamptz,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX contacts_email_idx ON contacts (email);
CREATE UNIQUE INDEX contacts_external_id_unique_idx ON contacts (external_id) WHERE external_id IS NOT NULL AND deleted_at IS NULL;
CREATE UNIQUE INDEX contacts_email_unique_idx ON contacts (lower(email)) WHERE email IS NOT NULL AND deleted_at IS NULL;
CREATE UNIQUE INDEX contacts_anonymous_id_unique_idx ON contacts (anonymous_id) WHERE anonymous_id IS NOT NULL AND deleted_at IS NULL;
CREATE UNIQUE INDEX contacts_discord_id_unique_idx ON contacts (discord_id) WHERE discord_id IS NOT NULL AND deleted_at IS NULL;
CREATE UNIQUE INDEX contacts_phone_unique_idx ON contacts (phone) WHERE phone IS NOT NULL AND deleted_at IS NULL;
CREATE INDEX contacts_properties_gin_idx ON contacts USING gin (properties jsonb_path_ops);

CREATE TABLE user_events (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  organization_id text,
  user_id text NOT NULL,
  contact_id uuid,
  event text NOT NULL,
  properties jsonb,
  groups jsonb,
  value numeric(14, 2),
  currency char(3),
  source text,
  idempotency_key text,
  occurred_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX user_events_valued_user_idx ON user_events (user_id, occurred_at) WHERE value IS NOT NULL;
CREATE INDEX user_events_valued_groups_idx ON user_events USING gin (groups jsonb_path_ops) WHERE value IS NOT NULL AND groups IS NOT NULL;
CREATE INDEX user_events_user_id_idx ON user_events (user_id);
CREATE INDEX user_events_event_idx ON user_events (event);
CREATE INDEX user_events_source_idx ON user_events (source);
CREATE INDEX user_events_occurred_at_idx ON user_events (occurred_at);
CREATE INDEX user_events_user_event_occurred_idx ON user_events (user_id, event, occurred_at);
CREATE UNIQUE INDEX user_events_idempotency_key_idx ON user_events (idempotency_key);
CREATE INDEX user_events_contact_id_idx ON user_events (contact_id) WHERE contact_id IS NOT NULL;

CREATE TABLE bucket_memberships (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  organization_id text,
  user_id text NOT NULL,
  user_email text,
  contact_id uuid,
  bucket_id text NOT NULL,
  status bucket_membership_status NOT NULL DEFAULT 'active',
  entered_at timestamptz NOT NULL DEFAULT now(),
  left_at timestamptz,
  expires_at timestamptz,
  max_dwell_at timestamptz,
  last_evaluated_at timestamptz,
  entry_count integer NOT NULL DEFAULT 1,
  source text,
  context jsonb DEFAULT '{}'::jsonb,
  dwell_state jsonb DEFAULT '{}'::jsonb,
  dwell_anchor_at timestamptz,
  deleted_at timestamptz,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX uq_user_bucket_active ON bucket_memberships (user_id, bucket_id) WHERE status = 'active' AND deleted_at IS NULL;
CREATE UNIQUE INDEX uq_contact_bucket_active ON bucket_memberships (contact_id, bucket_id) WHERE contact_id IS NOT NULL AND status = 'active' AND deleted_at IS NULL;
CREATE INDEX bucket_memberships_bucket_id_status_idx ON bucket_memberships (bucket_id, status);
CREATE INDEX bucket_memberships_user_id_idx ON bucket_memberships (user_id);
CREATE INDEX bucket_memberships_last_evaluated_idx ON bucket_memberships (last_evaluated_at);
CREATE INDEX bucket_memberships_expires_at_idx ON bucket_memberships (expires_at);
CREATE INDEX bucket_memberships_max_dwell_at_idx ON bucket_memberships (max_dwell_at);
CREATE INDEX bucket_memberships_dwell_idx ON bucket_memberships (bucket_id, status, entered_at);
CREATE INDEX bucket_memberships_bucket_id_status_id_idx ON bucket_memberships (bucket_id, status, id);
CREATE INDEX bucket_memberships_dwell_lastfired_idx ON bucket_memberships (bucket_id, status, last_evaluated_at);
CREATE INDEX bucket_memberships_contact_id_idx ON bucket_memberships (contact_id) WHERE contact_id IS NOT NULL;

CREATE TABLE bucket_configs (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  bucket_id text NOT NULL,
  enabled boolean NOT NULL DEFAULT true,
  criteria_hash text,
  coalesce_claimed_at timestamptz,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX bucket_configs_bucket_id_idx ON bucket_configs (bucket_id);

CREATE TABLE journey_states (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  organization_id text,
  user_id text NOT NULL,
  user_email text NOT NULL,
  contact_id uuid,
  journey_id text NOT NULL,
  current_node_id text NOT NULL,
  status journey_status NOT NULL DEFAULT 'active',
  hatchet_run_id text,
  journey_version_hash text,
  journey_version_label text,
  context jsonb DEFAULT '{}'::jsonb,
  error_message text,
  entry_count integer NOT NULL DEFAULT 1,
  completed_at timestamptz,
  exited_at timestamptz,
  deleted_at timestamptz,
  wait_deadline timestamptz,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX uq_user_journey_active ON journey_states (user_id, journey_id) WHERE status IN ('active', 'waiting');
CREATE UNIQUE INDEX uq_contact_journey_active ON journey_states (contact_id, journey_id) WHERE contact_id IS NOT NULL AND status IN ('active', 'waiting');
CREATE INDEX journey_states_status_idx ON journey_states (status);
CREATE INDEX journey_states_hatchet_run_idx ON journey_states (hatchet_run_id);
CREATE INDEX journey_states_user_id_idx ON journey_states (user_id);
CREATE INDEX journey_states_journey_id_status_idx ON journey_states (journey_id, status);
CREATE INDEX journey_states_updated_at_idx ON journey_states (updated_at);
CREATE INDEX journey_states_contact_id_idx ON journey_states (contact_id) WHERE contact_id IS NOT NULL;

CREATE TABLE import_jobs (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  file_name text,
  format text NOT NULL,
  status import_job_status NOT NULL DEFAULT 'pending',
  total_rows integer,
  processed_rows integer NOT NULL DEFAULT 0,
  failed_rows integer NOT NULL DEFAULT 0,
  errors jsonb,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX import_jobs_status_idx ON import_jobs (status);
