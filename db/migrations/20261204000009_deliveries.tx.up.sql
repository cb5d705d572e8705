-- ours [beyond]: the deliveries of transitions to destinations other than
-- Hatchet (contract §15) — PostHog person properties and outbound
-- webhooks. Written in the transaction of the transition, like the
-- outbox's pushes; each destination's dispatcher sends its own rows, in
-- id order per (user, bucket), so a failing endpoint holds up only its
-- own deliveries. A delivery that failed too often is dead: kept, shown,
-- and queued again on request.
CREATE TABLE IF NOT EXISTS bucket_event_deliveries (
    id bigserial PRIMARY KEY,
    destination text NOT NULL,
    user_id text NOT NULL,
    bucket_id text NOT NULL,
    -- The transition's idempotency key: one delivery per destination.
    idempotency_key text NOT NULL,
    -- What to send: the webhook body, or the person properties to set or unset.
    payload jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    available_at timestamptz NOT NULL DEFAULT now(),
    leased_until timestamptz,
    attempts integer NOT NULL DEFAULT 0,
    last_error text,
    delivered_at timestamptz,
    dead_at timestamptz
) WITH (fillfactor = 70);
CREATE UNIQUE INDEX IF NOT EXISTS bucket_event_deliveries_key_idx
    ON bucket_event_deliveries (destination, idempotency_key);
-- What a dispatcher claims: its due deliveries, oldest first.
CREATE INDEX IF NOT EXISTS bucket_event_deliveries_pending_idx
    ON bucket_event_deliveries (destination, available_at, id) WHERE delivered_at IS NULL AND dead_at IS NULL;
-- The order per subject: an undelivered earlier delivery holds the later ones back.
CREATE INDEX IF NOT EXISTS bucket_event_deliveries_subject_idx
    ON bucket_event_deliveries (destination, user_id, bucket_id, id) WHERE delivered_at IS NULL;
