-- V3: sessions beside the log, as sql/postgres/V4__sessions.sql describes. Times are RFC 3339
-- in UTC with microseconds, so they compare as text.
CREATE TABLE sessions (
    session_id    TEXT    PRIMARY KEY CHECK (length(session_id) = 36),
    user_id       TEXT    NOT NULL CHECK (length(user_id) = 36),
    generation    INTEGER NOT NULL CHECK (generation > 0),
    token_hash    BLOB    NOT NULL CHECK (length(token_hash) = 32),
    previous_hash BLOB    CHECK (length(previous_hash) = 32),
    sealed        BLOB,
    rotated_at    TEXT,
    last_used_at  TEXT    NOT NULL,
    expires_at    TEXT    NOT NULL
) STRICT;

-- As on PostgreSQL, only what a rotation never changes is indexed; idle rows are found by a
-- scan when expired ones are pruned, once a minute.
CREATE INDEX sessions_expires_at ON sessions (expires_at);
