-- ours: a dispatcher claims the pending pushes in the order they go out —
-- every other push before the arms of expiry timers, then by when they
-- became due and by id (db.ClaimOutbox). An index in that order lets the
-- claim walk it and stop at its limit; by (available_at, id) alone, every
-- claim read and sorted every pending row, 45 of its 85 ms for 1 000 of
-- 20 000 pending rows (docs/performance.md, *The outbox's claim*). The
-- index replaces that one: the few other statements over pending rows are
-- an operator's, and a second index would be written by every transition.
CREATE INDEX IF NOT EXISTS bucket_event_outbox_claim_idx
    ON bucket_event_outbox ((event_key = 'bucket:arm-expiry'), available_at, id)
    WHERE dispatched_at IS NULL;
DROP INDEX IF EXISTS bucket_event_outbox_pending_idx;
