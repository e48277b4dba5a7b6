-- V3: every committed append wakes the other instances. A statement-level trigger sends the
-- log's last position on the `authlog_events` channel; PostgreSQL delivers it when (and only
-- if) the transaction commits, to every session that LISTENs (docs/architecture.md, "Running
-- several instances"). Any writer's rows notify, so an instance cannot miss one it did not make.
-- The position is read through the primary key's index, which sees the statement's own rows: no
-- transition table, so a batch's rows are not copied once more.
CREATE FUNCTION events_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('authlog_events', (SELECT max(position) FROM events)::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER events_notify
    AFTER INSERT ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_notify();
