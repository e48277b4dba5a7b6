-- V4: sessions beside the log (docs/decisions.md, "Sessions: what the log holds"). The log
-- records when each session started, from where, and when and why it ended; this table holds
-- only what changes on every refresh: the current refresh token's hash, and what the reuse
-- grace needs. A row is inserted and deleted in the same transaction as the session's
-- SessionStarted and SessionEnded events, and rotated by a conditional UPDATE, so a refresh
-- token is spent once however many instances race for it.
CREATE TABLE sessions (
    session_id    uuid        PRIMARY KEY,
    user_id       uuid        NOT NULL,
    -- Rotations so far, plus one: the generation of the current token.
    generation    integer     NOT NULL CHECK (generation > 0),
    -- SHA-256 of the current token's secret; never the token.
    token_hash    bytea       NOT NULL CHECK (length(token_hash) = 32),
    -- The token the last rotation spent, and that rotation's successor sealed under it (only a
    -- holder of the spent token can open it): a second refresh within the grace gets the same
    -- successor.
    previous_hash bytea       CHECK (length(previous_hash) = 32),
    sealed        bytea,
    rotated_at    timestamptz,
    last_used_at  timestamptz NOT NULL,
    expires_at    timestamptz NOT NULL
-- Room on each page for the new version of a row: a rotation changes no indexed column, so
-- PostgreSQL can update it in place (a HOT update) instead of adding index entries each time.
) WITH (fillfactor = 70);

-- Only columns a rotation never changes are indexed (see above). Idle rows are found by a scan,
-- once a minute, when expired ones are pruned.
CREATE INDEX sessions_expires_at ON sessions (expires_at);
