#!/usr/bin/env python3
"""Verify authlog's hash chain without authlog (see docs/auditing.md).

Reads the rows of the events table in position order, either from an embedded store file
(--sqlite authlog-data/events.db) or as tab-separated lines on stdin (from the psql query in
docs/auditing.md), recomputes every hash, and prints the count, head position and head hash.
Exits 1 naming the first position where the chain breaks.
"""
import hashlib
import json
import sqlite3
import sys

GENESIS = "0" * 64


def canonical(position, stream_id, stream_version, event_type, event_version,
              payload, metadata, recorded_at):
    """The canonical encoding: a compact JSON array, object keys sorted, UTF-8."""
    return json.dumps(
        [position, stream_id, stream_version, event_type, event_version,
         json.loads(payload), json.loads(metadata), recorded_at],
        sort_keys=True, separators=(",", ":"), ensure_ascii=False,
    )


def rows():
    if sys.argv[1:2] == ["--sqlite"]:
        db = sqlite3.connect(f"file:{sys.argv[2]}?mode=ro", uri=True)
        yield from db.execute(
            "SELECT position, stream_id, stream_version, event_type, event_version,"
            " payload, metadata, recorded_at, prev_hash, hash FROM events ORDER BY position")
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
    if position <= head_position or prev_hash != head or stored_hash != computed:
        print(f"BROKEN at position {position}")
        sys.exit(1)
    head, head_position, count = computed, position, count + 1
print(f"events: {count}")
print(f"head position: {head_position}")
print(f"head hash: {head}")
