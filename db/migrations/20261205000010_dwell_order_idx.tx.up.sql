-- ours: the sweep's dwell pass takes a bucket's due members in user key
-- order, 10 000 at a time. Every index a fire writes (user_events by user
-- and by idempotency key, which begins with the bucket and the user) and
-- the contacts it reads are keyed by the user, so consecutive pages touch
-- neighbouring index pages; in membership id order, a random uuid, each
-- row of a page touched a page of its own (contract §14, docs/performance.md).
CREATE INDEX IF NOT EXISTS bucket_memberships_dwell_order_idx
    ON bucket_memberships (bucket_id, user_id)
    WHERE status = 'active' AND deleted_at IS NULL;
