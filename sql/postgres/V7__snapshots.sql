-- Snapshots of the folded state (src/snapshot): a cache beside the log, never part of it. Each
-- body is sealed under a key the master key derives, and names the position and chain hash it
-- covers; a start uses one only while the log still has that hash there. Kept: the newest two.
-- An append that erases a user deletes them all in its transaction.
CREATE TABLE snapshots (
    position   bigint      PRIMARY KEY,
    written_at timestamptz NOT NULL DEFAULT now(),
    body       bytea       NOT NULL
);

-- Sealed bytes do not compress: store them out of line without trying.
ALTER TABLE snapshots ALTER COLUMN body SET STORAGE EXTERNAL;
