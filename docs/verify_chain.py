#!/usr/bin/env python3
"""Verify authlog's hash chain, signatures and checkpoints without authlog (docs/auditing.md).

Reads the rows of the events table in position order, either from an embedded store file
(--sqlite authlog-data/events.db, opened read-only; a copy on read-only media too) or as
tab-separated lines on stdin (from the psql query in docs/auditing.md), recomputes every hash,
and prints the count, head position and head hash. On SQLite, which stores JSON as text, it also
requires that text to be the canonical encoding, byte for byte: an edit that decodes to the same
value (whitespace, a duplicate key) changes what SQL sees without changing the hash.

With --public-key (the log-signing key of generation 1, base64url), every row must be covered by
a valid Ed25519 signature on a later row of the log, by the key in force (a LogKeyRotated names
the next, from the append after it). With --checkpoints FILE too, the log must hold every signed
checkpoint in the file unchanged. Ed25519 comes from the `cryptography` package when installed,
else from the pure-Python RFC 8032 code below (slower, same answers).
Exits 1 naming the first position where the chain breaks or no valid signature covers a row.
"""
import argparse
import base64
import hashlib
import json
import os
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


def unbase64(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# Ed25519 verification, RFC 8032 section 6 (used when `cryptography` is not installed).
P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
D = -121665 * pow(121666, P - 2, P) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)


def point_add(a, b):
    e, h = (a[1] - a[0]) * (b[1] - b[0]) % P, (a[1] + a[0]) * (b[1] + b[0]) % P
    c, d = 2 * a[3] * b[3] * D % P, 2 * a[2] * b[2] % P
    e, f, g, h = h - e, d - c, d + c, h + e
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def point_mul(s, point):
    result = (0, 1, 1, 0)
    while s > 0:
        if s & 1:
            result = point_add(result, point)
        point, s = point_add(point, point), s >> 1
    return result


def recover_x(y, sign):
    if y >= P:
        return None
    x2 = (y * y - 1) * pow(D * y * y + 1, P - 2, P)
    if x2 == 0:
        return None if sign else 0
    x = pow(x2, (P + 3) // 8, P)
    if (x * x - x2) % P != 0:
        x = x * SQRT_M1 % P
    if (x * x - x2) % P != 0:
        return None
    return P - x if (x & 1) != sign else x


def decompress(data):
    y = int.from_bytes(data, "little")
    sign, y = y >> 255, y & ((1 << 255) - 1)
    x = recover_x(y, sign)
    return None if x is None else (x, y, 1, x * y % P)


def pure_verify(public, message, signature):
    gy = 4 * pow(5, P - 2, P) % P
    base = (recover_x(gy, 0), gy, 1, recover_x(gy, 0) * gy % P)
    a, r = decompress(public), decompress(signature[:32])
    s = int.from_bytes(signature[32:], "little")
    if a is None or r is None or s >= L:
        return False
    h = int.from_bytes(hashlib.sha512(signature[:32] + public + message).digest(), "little") % L
    left, right = point_mul(s, base), point_add(r, point_mul(h, a))
    return ((left[0] * right[2] - right[0] * left[2]) % P == 0
            and (left[1] * right[2] - right[1] * left[2]) % P == 0)


def verify(public, message, signature):
    """Whether `signature` (base64url) is `public`'s (bytes) over `message` (text)."""
    try:
        signature = unbase64(signature)
    except ValueError:
        return False
    if public is None or len(signature) != 64:
        return False
    if not os.environ.get("AUTHLOG_PURE_ED25519"):
        try:
            from cryptography.exceptions import InvalidSignature
            from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
            try:
                Ed25519PublicKey.from_public_bytes(public).verify(signature, message.encode())
                return True
            except (InvalidSignature, ValueError):
                return False
        except ImportError:
            pass
    return pure_verify(public, message.encode(), signature)


parser = argparse.ArgumentParser(description="Verify an authlog event log.")
parser.add_argument("--sqlite", metavar="EVENTS_DB", help="the embedded store's file")
parser.add_argument("--public-key", help="the log-signing public key, generation 1")
parser.add_argument("--checkpoints", metavar="FILE", help="signed checkpoints to find")
ARGS = parser.parse_args()
QUERY = ("SELECT position, stream_id, stream_version, event_type, event_version,"
         " payload, metadata, recorded_at, prev_hash, hash, signature FROM events"
         " ORDER BY position")


def rows():
    if ARGS.sqlite:
        path = ARGS.sqlite.replace("%", "%25").replace("?", "%3f").replace("#", "%23")
        try:
            yield from sqlite3.connect(f"file:{path}?mode=ro", uri=True).execute(QUERY)
        except sqlite3.OperationalError:
            # On read-only media SQLite cannot make its shared-memory file: read it as a copy.
            yield from sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True).execute(QUERY)
    else:
        for line in sys.stdin:
            p, s, v, t, ev, payload, meta, at, prev, h, sig = line.rstrip("\n").split("\t")
            yield int(p), s, int(v), t, int(ev), payload, meta, at, prev, h, sig or None


def checkpoints():
    """JSON lines, or authlog's log lines: text (`checkpoint={...}`) or JSON (`fields`)."""
    found = []
    for line in open(ARGS.checkpoints, encoding="utf-8") if ARGS.checkpoints else []:
        text = line.split("checkpoint=", 1)[1].split("}", 1)[0] + "}" if "checkpoint=" in line \
            else line
        try:
            value = json.loads(text)
            if "fields" in value:
                value = json.loads(value["fields"]["checkpoint"])
            found.append(value)
        except (ValueError, KeyError, TypeError):
            pass
    return found


def fail(message):
    print(message)
    sys.exit(1)


keys = {1: unbase64(ARGS.public_key)} if ARGS.public_key else None
anchors = checkpoints()
wanted = {checkpoint["position"] for checkpoint in anchors}
hashes, generation, unsigned_from, rotations, signed = {}, 1, None, [], 0
head, head_position, count = GENESIS, 0, 0
for (position, stream_id, version, event_type, event_version,
     payload, metadata, recorded_at, prev_hash, stored_hash, signature) in rows():
    text = canonical(position, stream_id, version, event_type, event_version,
                     payload, metadata, recorded_at)
    computed = hashlib.sha256((head + text).encode("utf-8")).hexdigest()
    not_canonical = ARGS.sqlite and any(column != compact(json.loads(column))
                                        for column in (payload, metadata))
    if position <= head_position or prev_hash != head or stored_hash != computed or not_canonical:
        fail(f"BROKEN at position {position}")
    head, head_position, count = computed, position, count + 1
    if position in wanted:
        hashes[position] = computed
    if keys is None:
        continue
    if event_type == "LogKeyRotated":
        rotations.append(json.loads(payload))
    if not signature:
        unsigned_from = unsigned_from or position
        continue
    if not verify(keys.get(generation), f"authlog log head v1\n{position}\n{computed}", signature):
        fail(f"UNSIGNED at position {position}")
    for rotation in rotations:
        generation = rotation["generation"]
        keys[generation] = unbase64(rotation["public_key"])
    rotations, unsigned_from, signed = [], None, signed + 1
if keys is not None and unsigned_from is not None:
    fail(f"UNSIGNED at position {unsigned_from}")
print(f"events: {count}")
print(f"head position: {head_position}")
print(f"head hash: {head}")
if keys is not None:
    print(f"signatures: {signed} checked, all valid")
for checkpoint in anchors if keys is not None else []:
    at = checkpoint["position"]
    message = f"authlog checkpoint v1\n{at}\n{checkpoint['hash']}\n{checkpoint['time']}"
    key = keys.get(checkpoint["key_generation"])
    if key is None or base64.urlsafe_b64encode(key).decode().rstrip("=") != \
            checkpoint["public_key"] or not verify(key, message, checkpoint["signature"]):
        fail(f"CHECKPOINT MISSING: the checkpoint of position {at} is not signed by a trusted log key")
    if at > head_position or hashes.get(at) != checkpoint["hash"]:
        fail(f"CHECKPOINT MISSING: position {at}")
if anchors and keys is not None:
    print(f"checkpoints: {len(anchors)} anchored, all present and unchanged")
