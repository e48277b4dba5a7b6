-- Snapshots of the folded state (src/snapshot): a cache beside the log, never part of it. Each
-- is sealed under a key the master key derives, and names the position and chain hash it
-- covers; a start uses one only while the log still has that hash there. Kept: the newest two.
-- An append that erases a user deletes them all in its transaction.
CREATE TABLE snapshots (
    position   bigint      PRIMARY KEY,
    written_at timestamptz NOT NULL DEFAULT now(),
    bytes      bigint      NOT NULL
);

-- A snapshot's bytes in pieces of a few megabytes, so that neither end holds a message buffer
-- the size of the whole snapshot (a few hundred megabytes at a million users).
CREATE TABLE snapshot_chunks (
    position bigint  NOT NULL REFERENCES snapshots (position) ON DELETE CASCADE,
    seq      integer NOT NULL,
    body     bytea   NOT NULL,
    PRIMARY KEY (position, seq)
);

-- Sealed bytes do not compress: store them out of line without trying.
ALTER TABLE snapshot_chunks ALTER COLUMN body SET STORAGE EXTERNAL;
