-- ours [beyond]: the expiry timers of fastExpiry members. A join arms one
-- in its own transaction (with the bucket:arm-expiry push); the running
-- workers fire the due ones, claiming them with FOR UPDATE SKIP LOCKED and
-- deleting them in the transaction that leaves their members. A sleeping
-- Hatchet run per member did not scale (docs/expiry.md).
CREATE TABLE IF NOT EXISTS bucket_expiry_timers (
    row_id     uuid        NOT NULL, -- the membership armed
    fires_at   timestamptz NOT NULL, -- its armed expires_at (armedExpiresAt)
    bucket_id  text        NOT NULL,
    user_id    text        NOT NULL,
    user_email text,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (row_id, fires_at)
);
CREATE INDEX IF NOT EXISTS bucket_expiry_timers_fires_at_idx ON bucket_expiry_timers (fires_at);
