-- V5: log signatures (src/events/signed.rs, docs/auditing.md). The last row of every append
-- carries an Ed25519 signature over the chain head, made with a key derived from the master
-- key, which never enters the database: whoever can only write to this file cannot sign. Not
-- covered by the hash (it signs the hash). Rows written before V5 have none; the first signed
-- append covers them through the chain.
ALTER TABLE events ADD COLUMN signature TEXT CHECK (signature IS NULL OR length(signature) = 86);

-- The signed rows, one per append: where signing began, and the checkpoints' heads.
CREATE INDEX events_signed ON events (position) WHERE signature IS NOT NULL;

-- The log-signing key's rotations: which key signs the next append.
CREATE INDEX events_log_key_rotations ON events (position) WHERE event_type = 'LogKeyRotated';
