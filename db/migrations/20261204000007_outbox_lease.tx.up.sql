-- ours [beyond]: a dispatcher leases the outbox rows it pushes instead of
-- holding their row locks (and a connection) for the whole push. A row
-- leased until a time another dispatcher skips; once pushed it is marked
-- dispatched, once refused it backs off, and a dispatcher that died
-- mid-push lets its lease lapse, so the row is pushed again.
ALTER TABLE bucket_event_outbox ADD COLUMN IF NOT EXISTS leased_until timestamptz;
