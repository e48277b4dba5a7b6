-- V2: the hash chain (docs/auditing.md). Every event carries the previous event's hash and its
-- own: SHA-256 over the previous hash and the event's canonical encoding, computed inside the
-- append transaction under an advisory lock, so positions commit in chain order even with
-- several writers. Rows written before V2 are linked once, at start-up, by authlog.
ALTER TABLE events
    ADD COLUMN prev_hash text CHECK (prev_hash IS NULL OR length(prev_hash) = 64),
    ADD COLUMN hash      text CHECK (hash IS NULL OR length(hash) = 64);

-- Positions are assigned by authlog, under the append lock, in chain order; the sequence is not
-- used any more.
ALTER TABLE events ALTER COLUMN position DROP DEFAULT;
