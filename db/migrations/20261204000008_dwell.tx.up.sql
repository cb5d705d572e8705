-- Dwell reactions (contract §14): the columns and indexes of Hogsend's
-- migration 0013, with its names, so that a Hogsend database that has them
-- is left as it is. dwell_state holds, per schedule label, when the
-- membership last fired it; dwell_anchor_at, when set, is when the
-- membership began by its criteria (a backfilled absence), the clock of
-- its dwell schedules in place of entered_at.
ALTER TABLE bucket_memberships ADD COLUMN IF NOT EXISTS dwell_state jsonb DEFAULT '{}'::jsonb;
ALTER TABLE bucket_memberships ADD COLUMN IF NOT EXISTS dwell_anchor_at timestamptz;
CREATE INDEX IF NOT EXISTS bucket_memberships_dwell_idx
    ON bucket_memberships (bucket_id, status, entered_at);
CREATE INDEX IF NOT EXISTS bucket_memberships_bucket_id_status_id_idx
    ON bucket_memberships (bucket_id, status, id);
CREATE INDEX IF NOT EXISTS bucket_memberships_dwell_lastfired_idx
    ON bucket_memberships (bucket_id, status, last_evaluated_at);
