-- V1: the event log, authlog's only source of truth.
--
-- Every state change is one row here, and rows are never changed or removed. The service's
-- in-memory directory is rebuilt from this table at start-up, in `position` order.

CREATE TABLE events (
    -- Global order of the log. Replay applies events in this order.
    position       bigserial   PRIMARY KEY,
    -- The stream is the user: every event about a user carries the user's id.
    stream_id      uuid        NOT NULL,
    -- 1 for UserRegistered, then one more per event in the stream. Unique per stream, so two
    -- writers that decided on the same state cannot both append (optimistic concurrency).
    stream_version integer     NOT NULL CHECK (stream_version > 0),
    -- Past-tense event name and payload schema version; old versions are upcast on read.
    event_type     text        NOT NULL CHECK (event_type <> ''),
    event_version  integer     NOT NULL CHECK (event_version > 0),
    payload        jsonb       NOT NULL CHECK (jsonb_typeof(payload) = 'object'),
    -- Where the request came from (client IP, user agent); for auditors, never for decisions.
    metadata       jsonb       NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metadata) = 'object'),
    -- Commit time of the batch the event was appended in.
    recorded_at    timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT events_stream_version_key UNIQUE (stream_id, stream_version),
    -- A registration must name its email, or the unique index below could not protect it.
    CONSTRAINT events_registered_email_present
        CHECK (event_type <> 'UserRegistered' OR payload ? 'email')
);

-- One account per email, enforced by the database itself: two authlog processes sharing this
-- table can never register the same (normalised) email, whatever their memory says.
-- The application maps a violation of this index (SQLSTATE 23505) to "User already exists".
CREATE UNIQUE INDEX events_registered_email_key
    ON events ((payload ->> 'email'))
    WHERE event_type = 'UserRegistered';

-- Append-only: history is never rewritten. UPDATE, DELETE and TRUNCATE all fail, whoever runs
-- them, unless a superuser disables the triggers on purpose.
CREATE FUNCTION events_reject_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'restrict_violation',
              HINT = 'Record a new event instead of changing an old one.';
END;
$$;

CREATE TRIGGER events_no_update_or_delete
    BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_reject_change();

CREATE TRIGGER events_no_truncate
    BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_reject_change();
