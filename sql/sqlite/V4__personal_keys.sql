-- V4: personal data sealed per user (src/events/personal.rs, docs/security.md). Each user's
-- email, password hashes, client addresses and user agents are sealed in the log under a data
-- key of their own, kept here wrapped by the master key. Erasing a user deletes their row in
-- the same transaction as their UserErased event: nothing can open their data any more, and
-- the hash chain, which covers the sealed bytes, still verifies.
CREATE TABLE personal_keys (
    user_id     TEXT NOT NULL PRIMARY KEY CHECK (length(user_id) = 36),
    -- HMAC-SHA256 of the normalised email under a key derived from the master key: one account
    -- per email without the email. NULL for users registered before V4 (their registration
    -- holds the email in clear, under the index below).
    email_index BLOB CHECK (email_index IS NULL OR length(email_index) = 32),
    -- The user's 32-byte data key, sealed under the master key (XChaCha20-Poly1305).
    wrapped_key BLOB NOT NULL,
    created_at  TEXT NOT NULL
-- Keyed by the user id itself: one B-tree for the rows, not a rowid table and an index.
) STRICT;

CREATE UNIQUE INDEX personal_keys_email_index_key ON personal_keys (email_index);

-- Registrations from now on hold their email sealed (an object); V1's unique index and its
-- REPLACE guard keep covering the emails stored in clear before V4, and only those.
DROP TRIGGER events_no_replace_registered_email;
DROP INDEX events_registered_email_key;

CREATE UNIQUE INDEX events_registered_email_key
    ON events (json_extract(payload, '$.email'))
    WHERE event_type = 'UserRegistered' AND json_type(payload, '$.email') = 'text';

CREATE TRIGGER events_no_replace_registered_email
    BEFORE INSERT ON events
    WHEN NEW.event_type = 'UserRegistered'
     AND json_type(NEW.payload, '$.email') = 'text'
     AND EXISTS (SELECT 1 FROM events
                 WHERE event_type = 'UserRegistered'
                   AND json_type(payload, '$.email') = 'text'
                   AND json_extract(payload, '$.email') = json_extract(NEW.payload, '$.email'))
BEGIN
    SELECT RAISE(ABORT, 'UNIQUE constraint failed: index ''events_registered_email_key''');
END;
