#!/usr/bin/env python3
"""Verify authlog's hash chain without authlog (see docs/auditing.md).

Reads the rows of the events table in position order, either from an embedded store file
(--sqlite authlog-data/events.db, opened read-only; a copy on read-only media too) or as
tab-separated lines on stdin (from the psql query in docs/auditing.md), recomputes every hash,
and prints the count, head position and head hash. On SQLite, which stores JSON as text, it also
requires that text to be the canonical encoding, byte for byte: an edit that decodes to the same
value (whitespace, a duplicate key) changes what SQL sees without changing the hash.
Exits 1 naming the first position where the chain breaks.
"""
import hashlib
import json
import sqlite3
import sys

GENESIS = "0" * 64


def compact(value):
    """Compact JSON, object keys sorted, UTF-8: the canonical encoding."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical(position, stream_id, stream_version, event_type, event_version,
              payload, metadata, recorded_at):
    """The canonical encoding of a row: a compact JSON array of its columns."""
    return compact([position, stream_id, stream_version, event_type, event_version,
                    json.loads(payload), json.loads(metadata), recorded_at])


SQLITE = sys.argv[1:2] == ["--sqlite"]
QUERY = ("SELECT position, stream_id, stream_version, event_type, event_version,"
         " payload, metadata, recorded_at, prev_hash, hash FROM events ORDER BY position")


def rows():
    if SQLITE:
        path = sys.argv[2].replace("%", "%25").replace("?", "%3f").replace("#", "%23")
        try:
            yield from sqlite3.connect(f"file:{path}?mode=ro", uri=True).execute(QUERY)
        except sqlite3.OperationalError:
            # On read-only media SQLite cannot make its shared-memory file: read it as a copy.
            yield from sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True).execute(QUERY)
    else:
        for line in sys.stdin:
            p, s, v, t, ev, payload, meta, at, prev, h = line.rstrip("\n").split("\t")
            yield int(p), s, int(v), t, int(ev), payload, meta, at, prev, h


head, head_position, count = GENESIS, 0, 0
for (position, stream_id, version, event_type, event_version,
     payload, metadata, recorded_at, prev_hash, stored_hash) in rows():
    text = canonical(position, stream_id, version, event_type, event_version,
                     payload, metadata, recorded_at)
    computed = hashlib.sha256((head + text).encode("utf-8")).hexdigest()
    not_canonical = SQLITE and any(column != compact(json.loads(column))
                                   for column in (payload, metadata))
    if position <= head_position or prev_hash != head or stored_hash != computed or not_canonical:
        print(f"BROKEN at position {position}")
        sys.exit(1)
    head, head_position, count = computed, position, count + 1
print(f"events: {count}")
print(f"head position: {head_position}")
print(f"head hash: {head}")
