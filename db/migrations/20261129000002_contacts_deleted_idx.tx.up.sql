-- The sweeps skip erased users: a membership's user is live when it has a
-- live contact or none at all. This index answers "has a soft-deleted
-- contact" for the members without a live one, instead of a scan of
-- contacts per member. Soft-deleted contacts are few; the index is small.
CREATE INDEX IF NOT EXISTS contacts_deleted_external_id_idx
    ON contacts (external_id) WHERE deleted_at IS NOT NULL;
