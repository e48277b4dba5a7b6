-- V2: the hash chain (docs/auditing.md). Every event carries the previous event's hash and its
-- own: SHA-256 over the previous hash and the event's canonical encoding, computed inside the
-- append transaction. Rows written before V2 are linked once, when this migration runs.
ALTER TABLE events ADD COLUMN prev_hash TEXT CHECK (prev_hash IS NULL OR length(prev_hash) = 64);
ALTER TABLE events ADD COLUMN hash TEXT CHECK (hash IS NULL OR length(hash) = 64);
