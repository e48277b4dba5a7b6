-- V1: the event log in the embedded store, with the same rules as sql/postgres/V1__event_log.sql.
--
-- Every state change is one row here, and rows are never changed or removed. The service's
-- in-memory directory is rebuilt from this table at start-up, in `position` order. STRICT makes
-- SQLite check column types instead of storing whatever it is given.

CREATE TABLE events (
    -- Global order of the log. Replay applies events in this order. AUTOINCREMENT: a position is
    -- never handed out twice, even if rows were removed behind the triggers' back.
    position       INTEGER PRIMARY KEY AUTOINCREMENT,
    -- The stream is the user: the user's id as a hyphenated lowercase UUID.
    stream_id      TEXT    NOT NULL CHECK (length(stream_id) = 36),
    -- 1 for UserRegistered, then one more per event in the stream (optimistic concurrency).
    stream_version INTEGER NOT NULL CHECK (stream_version > 0),
    -- Past-tense event name and payload schema version; old versions are upcast on read.
    event_type     TEXT    NOT NULL CHECK (event_type <> ''),
    event_version  INTEGER NOT NULL CHECK (event_version > 0),
    -- JSON objects, as text.
    payload        TEXT    NOT NULL CHECK (json_valid(payload) AND json_type(payload) = 'object'),
    metadata       TEXT    NOT NULL DEFAULT '{}'
                           CHECK (json_valid(metadata) AND json_type(metadata) = 'object'),
    -- Commit time of the batch, RFC 3339 in UTC with microseconds, e.g. 2026-11-27T07:19:17.123456Z.
    recorded_at    TEXT    NOT NULL CHECK (recorded_at LIKE '____-__-__T__:__:__%Z'),

    CONSTRAINT events_stream_version_key UNIQUE (stream_id, stream_version),
    -- A registration must name its email, or the unique index below could not protect it.
    CONSTRAINT events_registered_email_present
        CHECK (event_type <> 'UserRegistered' OR json_extract(payload, '$.email') IS NOT NULL)
) STRICT;

-- One account per email, enforced by SQLite itself, also between processes sharing the file.
-- The application maps a violation of this index to "User already exists".
CREATE UNIQUE INDEX events_registered_email_key
    ON events (json_extract(payload, '$.email'))
    WHERE event_type = 'UserRegistered';

-- Append-only: history is never rewritten. SQLite has no TRUNCATE; `DELETE FROM events` is a
-- DELETE, and the trigger below also disables its truncate optimisation. An UPSERT is an UPDATE.
CREATE TRIGGER events_no_update
    BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'events is append-only: UPDATE is not allowed');
END;

CREATE TRIGGER events_no_delete
    BEFORE DELETE ON events
BEGIN
    SELECT RAISE(ABORT, 'events is append-only: DELETE is not allowed');
END;

-- INSERT OR REPLACE resolves a conflict by deleting the old row, and SQLite fires no DELETE
-- trigger for that unless a connection enables recursive_triggers. So every insert that would
-- collide is refused before the constraint is reached, whatever conflict clause it names. The
-- messages match SQLite's own for the unique constraints, so callers see one error either way.
CREATE TRIGGER events_no_replace_position
    BEFORE INSERT ON events
    WHEN EXISTS (SELECT 1 FROM events WHERE position = NEW.position)
BEGIN
    SELECT RAISE(ABORT, 'events is append-only: REPLACE is not allowed');
END;

CREATE TRIGGER events_no_replace_stream_version
    BEFORE INSERT ON events
    WHEN EXISTS (SELECT 1 FROM events
                 WHERE stream_id = NEW.stream_id AND stream_version = NEW.stream_version)
BEGIN
    SELECT RAISE(ABORT, 'UNIQUE constraint failed: events.stream_id, events.stream_version');
END;

CREATE TRIGGER events_no_replace_registered_email
    BEFORE INSERT ON events
    WHEN NEW.event_type = 'UserRegistered'
     AND EXISTS (SELECT 1 FROM events
                 WHERE event_type = 'UserRegistered'
                   AND json_extract(payload, '$.email') = json_extract(NEW.payload, '$.email'))
BEGIN
    SELECT RAISE(ABORT, 'UNIQUE constraint failed: index ''events_registered_email_key''');
END;
