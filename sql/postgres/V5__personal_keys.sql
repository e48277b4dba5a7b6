-- V5: personal data sealed per user (src/events/personal.rs, docs/security.md). Each user's
-- email, password hashes, client addresses and user agents are sealed in the log under a data
-- key of their own, kept here wrapped by the master key. Erasing a user deletes their row in
-- the same transaction as their UserErased event: nothing can open their data any more, and
-- the hash chain, which covers the sealed bytes, still verifies.
CREATE TABLE personal_keys (
    user_id     uuid        PRIMARY KEY,
    -- HMAC-SHA256 of the normalised email under a key derived from the master key: one account
    -- per email without the email. NULL for users registered before V5 (their registration
    -- holds the email in clear, under the index below).
    email_index bytea       CHECK (length(email_index) = 32),
    -- The user's 32-byte data key, sealed under the master key (XChaCha20-Poly1305).
    wrapped_key bytea       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT personal_keys_email_index_key UNIQUE (email_index)
);

-- Registrations from now on hold their email sealed (an object); V1's unique index keeps
-- covering the emails stored in clear before V5, and only those.
DROP INDEX events_registered_email_key;
CREATE UNIQUE INDEX events_registered_email_key
    ON events ((payload ->> 'email'))
    WHERE event_type = 'UserRegistered' AND jsonb_typeof(payload -> 'email') = 'string';
