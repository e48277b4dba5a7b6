#!/usr/bin/env python3
"""Turns the benchmark's raw results (one JSON file per measurement) into report.json and
report.md: each figure with its ratio to the bound measured in the same run, and each target met
or missed. The interpretation lives in bench/analysis.md, written after a run; the report links
to it rather than repeating it.

"No slower than today" compares with the report.json this run replaces, if there is one."""
import datetime
import json
import pathlib
import statistics
import sys

results, out, smoke = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3] == "1"
raw = {path.stem: json.loads(path.read_text()) for path in sorted(results.glob("*.json"))}
previous_path = out / "report.json"
previous = json.loads(previous_path.read_text()) if previous_path.exists() and not smoke else None

bcrypt = raw["bcrypt"]["hashes_per_second"]
bcrypt_ms = raw["bcrypt"]["ms_per_hash"]
ed25519 = raw.get("ed25519", {}).get("verifications_per_second")
stores = ["embedded", "postgres"]
targets = []


def target(name, value, goal, met, note=""):
    targets.append({"figure": name, "value": value, "target": goal, "met": bool(met), "note": note})


def rounds(prefix):
    """The interleaved rounds for one server: per round the ceiling and authlog's two figures."""
    found = []
    r = 1
    while f"{prefix}-profile-{r}" in raw:
        found.append({"ceiling": raw[f"ceiling-{prefix}-{r}"], "live": raw[f"{prefix}-live-{r}"],
                      "profile": raw[f"{prefix}-profile-{r}"]})
        r += 1
    return found


def summary(prefix):
    rs = rounds(prefix)
    med = lambda xs: statistics.median(xs)
    return {
        "rounds": len(rs),
        "ceiling_per_second": med([r["ceiling"]["per_second"] for r in rs]),
        "live_to_ceiling": med([r["live"]["per_second"] / r["ceiling"]["per_second"] for r in rs]),
        "profile_to_ceiling": med([r["profile"]["per_second"] / r["ceiling"]["per_second"] for r in rs]),
        "live_to_ceiling_range": [min(r["live"]["per_second"] / r["ceiling"]["per_second"] for r in rs),
                                  max(r["live"]["per_second"] / r["ceiling"]["per_second"] for r in rs)],
        "profile_to_ceiling_range": [min(r["profile"]["per_second"] / r["ceiling"]["per_second"] for r in rs),
                                     max(r["profile"]["per_second"] / r["ceiling"]["per_second"] for r in rs)],
        "profile_per_second": med([r["profile"]["per_second"] for r in rs]),
        "live_per_second": med([r["live"]["per_second"] for r in rs]),
        "profile_p99_ms": med([r["profile"]["p99_ms"] for r in rs]),
        "live_p99_ms": med([r["live"]["p99_ms"] for r in rs]),
        "ceiling_p99_ms": med([r["ceiling"]["p99_ms"] for r in rs]),
        "errors": sum(r[k]["socket_errors"] + r[k]["non_2xx"] for r in rs for k in ("live", "profile")),
    }


def old(store, key):
    """A figure from the report this run replaces, if it had it."""
    if not previous:
        return None
    found = previous.get("figures", {}).get(store, {}).get(key)
    if found is None and key == "group_commit_per_second":  # reports from before "figures"
        found = previous.get("raw", {}).get(f"store-{store}", {}).get("group_commit", {}).get("per_second")
    return found


http = {prefix: summary(prefix) for prefix in stores + ["info"] if f"{prefix}-profile-1" in raw}
figures = {}
for store in stores:
    h = http[store]
    login, signup = raw[f"{store}-login-16"], raw[f"{store}-signup-16"]
    p1024, fresh, abandon = raw[f"{store}-profile-1024"], raw[f"{store}-profile-fresh-64"], raw[f"{store}-abandon"]
    st, cold = raw[f"store-{store}"], raw[f"coldstart-{store}"]
    group, single = st["group_commit"]["per_second"], st["one_per_transaction"]["per_second"]
    queue_ms = 16 / bcrypt * 1000  # 16 connections share the cores: a login waits for the 15 ahead
    f = figures[store] = {
        "profile_to_ceiling": h["profile_to_ceiling"], "profile_p99_ms": h["profile_p99_ms"],
        "live_to_ceiling": h["live_to_ceiling"],
        "login_per_second": login["per_second"], "login_to_bcrypt_bound": login["per_second"] / bcrypt,
        "signup_per_second": signup["per_second"], "signup_to_bcrypt_bound": signup["per_second"] / bcrypt,
        "group_commit_per_second": group, "group_commit_to_single": group / single,
        "bystander_login_ms": abandon["bystander_ms"], "bystander_in_bcrypt_times": abandon["bystander_ms"] / bcrypt_ms,
        "profile_fresh_tokens_per_second": fresh["per_second"],
        "profile_fresh_tokens_to_ceiling": fresh["per_second"] / h["ceiling_per_second"],
        "profile_fresh_tokens_to_ed25519_bound": fresh["per_second"] / ed25519 if ed25519 else None,
        "coldstart_seconds": cold["replay_seconds"], "bytes_per_user": cold["bytes_per_user"],
    }
    if f"{store}-refresh-32" in raw:
        refresh = raw[f"{store}-refresh-32"]
        f["refresh_per_second"] = refresh["per_second"]
        f["refresh_to_group_commit"] = refresh["per_second"] / group
        signing = raw.get("ed25519", {}).get("signatures_per_second")
        f["refresh_to_signing_bound"] = refresh["per_second"] / signing if signing else None
        target(f"POST /token/refresh, 32 connections ({store})",
               f"{refresh['per_second']:,.0f}/s = {f['refresh_to_group_commit']:.0%} of the store's group commit "
               f"({group:,.0f} appends/s), p99 {refresh['p99_ms']:.1f} ms"
               + (f"; each signs a token: {f['refresh_to_signing_bound']:.0%} of Ed25519 signatures on every core "
                  f"({signing:,.0f}/s)" if signing else ""),
               "≥ 50 % of group commit (one row written per refresh, batched like appends, plus the "
               "HTTP and token work of two /profile requests); no errors",
               f["refresh_to_group_commit"] >= 0.5 and refresh["non_2xx"] == 0 and refresh["socket_errors"] == 0,
               f"{refresh['non_2xx']} non-2xx")
    lo, hi = h["profile_to_ceiling_range"]
    target(f"GET /profile, EdDSA, one token repeated, 64 connections ({store})",
           f"{f['profile_to_ceiling']:.0%} of ceiling (rounds {lo:.0%}–{hi:.0%})",
           "≥ 70 % of ceiling (issue 16)", f["profile_to_ceiling"] >= 0.70)
    if ed25519:
        target(f"GET /profile, EdDSA, a token never seen before each time, 64 connections ({store})",
               f"{fresh['per_second']:,.0f}/s = {f['profile_fresh_tokens_to_ed25519_bound']:.0%} of the Ed25519 "
               f"bound ({ed25519:,.0f} checks/s on every core), {f['profile_fresh_tokens_to_ceiling']:.0%} of the "
               f"ceiling; p99 {fresh['p99_ms']:.1f} ms",
               "report it, with the bound (issue 16); no errors",
               fresh["non_2xx"] == 0 and fresh["socket_errors"] == 0,
               f"{fresh['non_2xx']} non-2xx")
    target(f"GET /profile, 64 connections ({store})",
           f"{f['profile_to_ceiling']:.0%} of ceiling (rounds {lo:.0%}–{hi:.0%}), p99 {h['profile_p99_ms']:.2f} ms",
           "≥ 75 % of ceiling, p99 < 5 ms", f["profile_to_ceiling"] >= 0.75 and h["profile_p99_ms"] < 5)
    lo, hi = h["live_to_ceiling_range"]
    target(f"GET /health/live, 64 connections ({store})",
           f"{f['live_to_ceiling']:.0%} of ceiling (rounds {lo:.0%}–{hi:.0%})", "≥ 90 % of ceiling",
           f["live_to_ceiling"] >= 0.9)
    target(f"GET /profile, 1,024 connections ({store})",
           f"{p1024['socket_errors']} socket errors, {p1024['non_2xx']} non-2xx, max {p1024['max_ms']:.0f} ms",
           "no stall or error", p1024["socket_errors"] == 0 and p1024["non_2xx"] == 0)
    target(f"POST /login, cost {raw['bcrypt']['cost']}, EdDSA tokens ({store})",
           f"{f['login_to_bcrypt_bound']:.0%} of bound, p99 {login['p99_ms']:.0f} ms (queue implies {queue_ms:.0f} ms)",
           "≥ 90 % of bcrypt bound; p99 ≤ queue",
           f["login_to_bcrypt_bound"] >= 0.9 and login["p99_ms"] <= queue_ms * 1.25 and login["non_2xx"] == 0,
           f"{login['non_2xx']} non-2xx")
    target(f"POST /signup ({store})", f"{f['signup_to_bcrypt_bound']:.0%} of bound, p99 {signup['p99_ms']:.0f} ms",
           "≥ 90 % of bcrypt bound", f["signup_to_bcrypt_bound"] >= 0.9 and signup["non_2xx"] == 0,
           f"{signup['non_2xx']} non-2xx")
    before = old(store, "group_commit_per_second")
    target(f"store appends, group commit ({store})",
           f"{group:,.0f}/s, {group / single:.1f}× one per transaction ({single:,.0f}/s)"
           + (f"; last report {before:,.0f}/s" if before else ""),
           "≥ 10× one-per-transaction" + (", ≥ 5,000/s" if store == "postgres" else "")
           + ("; no slower than the last report (within 10 %)" if before else ""),
           group / single >= 10 and (store != "postgres" or group >= 5000)
           and (before is None or group >= before * 0.9))
    target(f"another user's login during {abandon['connections']:,} abandoned logins for one account ({store})",
           f"{abandon['bystander_ms']:.0f} ms = {f['bystander_in_bcrypt_times']:.1f} bcrypt times, status {abandon['bystander_status']}; "
           f"{abandon['password_checks']:.0f} checks ran, {abandon['waiting_at_peak']:.0f} waited at the peak",
           "answered within 3 bcrypt times", abandon["bystander_status"] == 200 and f["bystander_in_bcrypt_times"] <= 3)
    scale = f"{cold['users']:,} users and {cold['logins']:,} logins ({store})"
    target(f"full replay to ready, {scale}", f"{cold['replay_seconds']:.1f} s",
           "≤ 10 s (issue 20)", cold["replay_seconds"] <= 10)
    snap = raw.get(f"snapstart-{store}")
    if snap:
        target(f"start from a snapshot to ready, {scale}",
               f"{snap['seconds']:.2f} s ({cold['snapshot_bytes'] / 1e6:,.0f} MB snapshot, written in "
               f"{cold['snapshot_take_seconds']:.1f} s)", "≤ 2 s (issue 20)", snap["seconds"] <= 2)
        target(f"memory per user, {scale}",
               f"{snap['bytes_per_user']:.0f} B (a new process started from the snapshot; "
               f"{cold['bytes_per_user']:.0f} B after the full replay, with what the replay left behind)",
               "≤ 300 B (issue 20)", snap["bytes_per_user"] <= 300)
    target(f"authlog verify, {cold['verified_events']:,} events ({store})",
           f"{cold['verify_seconds']:.1f} s", "≤ 10 s (issue 20)", cold["verify_seconds"] <= 10)

imports = {store: raw[f"import-{store}"] for store in stores if f"import-{store}" in raw}
if "postgres" in imports:
    imp = imports["postgres"]
    group = raw["store-postgres"]["group_commit"]["per_second"]
    target(f"authlog import, the tutorial's table of {imp['rows']:,} rows, into PostgreSQL",
           f"{imp['users_per_second']:,.0f} users/s ({imp['seconds']:.2f} s from the first row read to "
           f"the last commit; {imp['users_per_second'] / group:.0%} of the store's group commit, "
           f"{group:,.0f} appends/s)", "≥ 20,000 users/s (issue 21)",
           imp["users_per_second"] >= 20000 and imp["imported"] == imp["rows"])

cluster = None
if "cluster-propagation" in raw:
    one, a, b = raw["cluster-signup-one"], raw["cluster-signup-a"], raw["cluster-signup-b"]
    p_one, p_a, p_b = raw["cluster-profile-one"], raw["cluster-profile-a"], raw["cluster-profile-b"]
    prop = raw["cluster-propagation"]
    errors = lambda *rs: sum(r["socket_errors"] + r["non_2xx"] for r in rs)
    cluster = {
        "propagation": prop,
        "signup_one_per_second": one["per_second"],
        "signup_two_per_second": a["per_second"] + b["per_second"],
        "signup_two_to_one": (a["per_second"] + b["per_second"]) / one["per_second"],
        "signup_errors": errors(one, a, b),
        "profile_one_per_second": p_one["per_second"],
        "profile_two_per_second": p_a["per_second"] + p_b["per_second"],
        "profile_errors": errors(p_one, p_a, p_b),
    }
    p50, p99 = prop["p50_ms"], prop["p99_ms"]
    target("commit on one instance to applied on the other, under a sign-up load",
           f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {prop['max_ms']:.1f} ms ({prop['events']:.0f} events)"
           if p99 is not None else "no event crossed", "p99 < 50 ms", p99 is not None and p99 < 50)
    target("two instances on one database, sign-ups split over both",
           f"{cluster['signup_two_per_second']:,.1f}/s against {cluster['signup_one_per_second']:,.1f}/s on one "
           f"({cluster['signup_two_to_one']:.0%}), {cluster['signup_errors']} errors",
           "no errors; no lower than one instance (5 % noise allowed)",
           cluster["signup_errors"] == 0 and cluster["signup_two_to_one"] >= 0.95)
    target("GET /profile on two instances at once",
           f"{cluster['profile_two_per_second']:,.0f}/s in sum ({p_a['per_second']:,.0f} + {p_b['per_second']:,.0f}; "
           f"one instance alone {cluster['profile_one_per_second']:,.0f}/s), {cluster['profile_errors']} errors",
           "no errors; report the sum", cluster["profile_errors"] == 0)

report = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
          "smoke": smoke, "machine": raw["machine"],
          "bounds": {"bcrypt_hashes_per_second": bcrypt, "bcrypt_cost": raw["bcrypt"]["cost"],
                     "bcrypt_ms_per_hash": bcrypt_ms, "ed25519_verifications_per_second": ed25519,
                     "ed25519_signatures_per_second": raw.get("ed25519", {}).get("signatures_per_second"),
                     "bcrypt10_hashes_per_second": raw.get("bcrypt10", {}).get("hashes_per_second"),
                     "http_ceiling_per_second": {p: h["ceiling_per_second"] for p, h in http.items()}},
          "http": http, "figures": figures, "cluster": cluster, "targets": targets, "raw": raw}
(out / "report.json").write_text(json.dumps(report, indent=2) + "\n")

m = raw["machine"]
lines = [
    "# authlog benchmark report", "",
    f"{report['date']} · {m['cores']} cores ({m['cpu']}) · load average before the run "
    f"{', '.join(f'{x:.2f}' for x in m['load_average'])} · {m['memory_bytes'] / 2**30:.0f} GiB",
    "", "Produced by `bench/run.sh`; the load generator (wrk, 2 threads) runs on the same machine. "
    "What the figures mean, and what dominates where a target is missed: [analysis.md](analysis.md).",
]
if smoke:
    lines += ["", "**Smoke run: debug build, tiny sizes, 2-second runs. The figures mean nothing.**"]
lines += ["", "## Bounds, measured in the same run", "", "| bound | figure |", "|---|---|",
          f"| bcrypt, cost {raw['bcrypt']['cost']}, every core | {bcrypt:,.1f} hashes/s ({bcrypt_ms:.0f} ms a hash) |"]
if "bcrypt10" in raw:
    lines.append(f"| bcrypt, cost 10, every core | {raw['bcrypt10']['hashes_per_second']:,.1f} hashes/s |")
if ed25519:
    lines.append(f"| Ed25519 signature checks (`verify_strict`), every core | {ed25519:,.0f} checks/s "
                 f"({raw['ed25519']['us_per_verification']:.0f} µs a check) |")
    if "signatures_per_second" in raw["ed25519"]:
        lines.append(f"| Ed25519 signatures, every core | {raw['ed25519']['signatures_per_second']:,.0f}/s "
                     f"({raw['ed25519']['us_per_signature']:.0f} µs a signature) |")
for prefix, h in http.items():
    lines.append(f"| plain actix-web handler, 2 workers, 64 connections (median of the {h['rounds']} rounds beside "
                 f"`{prefix}`) | {h['ceiling_per_second']:,.0f} req/s (p99 {h['ceiling_p99_ms']:.2f} ms) |")
lines += ["", "## HTTP, in turns with the ceiling", "",
          "Each round runs the plain handler, then `/health/live`, then `/profile` (one EdDSA token, reused as clients "
          "do), for the same time; ratios are per round, and the table gives their median and range.", "",
          "| server | rounds | /health/live req/s | to ceiling | /profile req/s | to ceiling | /profile p99 ms | errors |",
          "|---|---|---|---|---|---|---|---|"]
for prefix, h in http.items():
    name = {"info": "embedded, RUST_LOG=info (the default)"}.get(prefix, f"{prefix}, RUST_LOG=warn")
    lines.append(f"| {name} | {h['rounds']} | {h['live_per_second']:,.0f} | {h['live_to_ceiling']:.0%} "
                 f"({h['live_to_ceiling_range'][0]:.0%}–{h['live_to_ceiling_range'][1]:.0%}) | {h['profile_per_second']:,.0f} | "
                 f"{h['profile_to_ceiling']:.0%} ({h['profile_to_ceiling_range'][0]:.0%}–{h['profile_to_ceiling_range'][1]:.0%}) | "
                 f"{h['profile_p99_ms']:.2f} | {h['errors']} |")
lines += ["", "## Other endpoints", "",
          "| store | endpoint | connections | req/s | p50 ms | p99 ms | p99.9 ms | errors | ratio to bound |",
          "|---|---|---|---|---|---|---|---|---|"]
for store in stores:
    h = http[store]
    for name, endpoint, conns, ratio in [
            (f"{store}-profile-1024", "GET /profile", 1024, raw[f"{store}-profile-1024"]["per_second"] / h["ceiling_per_second"]),
            (f"{store}-profile-fresh-64", "GET /profile, a token never seen before each time (ratio: to the "
             "Ed25519 bound)", 64, figures[store]["profile_fresh_tokens_to_ed25519_bound"] or 0),
            (f"{store}-login-16", "POST /login", 16, figures[store]["login_to_bcrypt_bound"]),
            (f"{store}-refresh-32", "POST /token/refresh (ratio: to the store's group commit)", 32,
             figures[store].get("refresh_to_group_commit", 0)),
            (f"{store}-signup-16", "POST /signup", 16, figures[store]["signup_to_bcrypt_bound"])]:
        r = raw[name]
        lines.append(f"| {store} | {endpoint} | {conns} | {r['per_second']:,.0f} | {r['p50_ms']:.2f} | "
                     f"{r['p99_ms']:.2f} | {r['p999_ms']:.2f} | {r['socket_errors'] + r['non_2xx']} | {ratio:.0%} |")
lines += ["", "## Store and cold start (no HTTP, no bcrypt)", "",
          "| store | group commit | one transaction per event | ratio | full replay | start from a snapshot | memory per user | verify |",
          "|---|---|---|---|---|---|---|---|"]
for store in stores:
    st, cold = raw[f"store-{store}"], raw[f"coldstart-{store}"]
    snap = raw.get(f"snapstart-{store}", {})
    lines.append(f"| {store} | {st['group_commit']['per_second']:,.0f}/s | {st['one_per_transaction']['per_second']:,.0f}/s | "
                 f"{figures[store]['group_commit_to_single']:.1f}× | {cold['replay_seconds']:.1f} s ({cold['users']:,} users, "
                 f"{cold['logins']:,} logins) | {snap.get('seconds', float('nan')):.2f} s | "
                 f"{snap.get('bytes_per_user', float('nan')):.0f} B ({cold['bytes_per_user']:.0f} B after a full replay) | "
                 f"{cold['verify_seconds']:.1f} s ({cold['verified_events']:,} events) |")
lines += ["", "Memory per user is the resident memory a new process gains by starting from the snapshot, "
          "divided by the users, with `MIMALLOC_PURGE_DELAY=0` so that the snapshot's buffer, freed at the end "
          "of the load, is not counted. The figure after a full replay is the same process's growth over the replay, "
          "which counts what the allocator kept of the replay's pages, or reused of them."]
personal = raw.get("personal")
if personal:
    lines += ["", "Sealing personal data (issue 18), one core, no database: "
              f"{personal['seal_us_per_event']:.1f} µs to seal an event and "
              f"{personal['open_cold_us_per_event']:.1f} µs to open one as a starting process does "
              f"(each user's key unwrapped once), against {personal['decode_clear_us_per_event']:.1f} µs "
              f"to decode one stored in clear; one XChaCha20-Poly1305 seal of 32 bytes "
              f"{personal['aead_seal_us']:.2f} µs ({personal['users']:,} users, a registration and a "
              "login each)."]
signing = raw.get("signing")
if signing:
    lines += ["", "Signing the log (issue 19), one core, no database: "
              f"{signing['sign_us_per_append']:.0f} µs to sign an append's head, "
              f"{signing['check_us_per_append']:.0f} µs to check one, and "
              f"{signing['hash_us_per_row']:.2f} µs to recompute a row's hash as every reader now "
              f"does ({signing['rows']:,} sealed rows)."]
    for store in stores:
        cold = raw[f"coldstart-{store}"]
        if "verify_signed_seconds" in cold:
            lines.append(f"`verify` with signatures, {store}: {cold['verify_signed_seconds']:.1f} s for "
                         f"{cold['verified_events']:,} events and {cold['signatures']:,} signatures "
                         f"({cold['signatures'] / cold['verify_signed_seconds']:,.0f} signatures/s).")
if imports:
    lines += ["", "## Import from the tutorial's table (issue 21)", "",
              "`authlog import --from-postgres` reading the FastAPI tutorial's `users` table "
              "(`bench/tutorial_users.sql`: passlib-format hashes, no bcrypt run) into a new log. The rate "
              "is the command's own summary (first row read to last commit); the process figure adds "
              "start-up and migrations.", "",
              "| store | rows | imported | users/s | process |", "|---|---|---|---|---|"]
    for store, imp in imports.items():
        lines.append(f"| {store} | {imp['rows']:,} | {imp['imported']:,} | {imp['users_per_second']:,.0f} | "
                     f"{imp['process_seconds']:.2f} s |")
if cluster:
    prop = cluster["propagation"]
    lines += ["", "## Several instances on one PostgreSQL database", "",
              "Two `authlog serve` processes share the database (and the machine's 2 cores, so a second "
              "instance adds availability, not capacity, here). Propagation is each event's `recorded_at` "
              "(taken under the append lock, just before its commit) to the other instance applying it, from "
              "both instances' `authlog_tail_delay_seconds` histograms (quantiles interpolated within buckets) "
              "and `authlog_tail_delay_max_seconds`.", "",
              "| measurement | figure |", "|---|---|",
              f"| POST /signup, 16 connections, one instance | {cluster['signup_one_per_second']:,.1f}/s |",
              f"| POST /signup, 8 + 8 connections over two instances | {cluster['signup_two_per_second']:,.1f}/s "
              f"({cluster['signup_two_to_one']:.0%} of one), {cluster['signup_errors']} errors |",
              f"| propagation during that load | p50 {prop['p50_ms'] or 0:.1f} ms, p99 {prop['p99_ms'] or 0:.1f} ms, "
              f"max {prop['max_ms']:.1f} ms, {prop['events']:.0f} events |",
              f"| GET /profile, 64 connections, one instance | {cluster['profile_one_per_second']:,.0f}/s |",
              f"| GET /profile, 64 connections on each of two at once | {cluster['profile_two_per_second']:,.0f}/s in sum, "
              f"{cluster['profile_errors']} errors |"]
if "sessions-memory" in raw:
    mem = raw["sessions-memory"]
    target("memory per live session", f"{mem['bytes_per_session']:.0f} bytes ({mem['sessions']:,} sessions "
           f"of {mem['users']:,} users, address and user agent included)", "measured (issue 15); < 300 bytes",
           mem["bytes_per_session"] < 300)
    lines += ["", "## Sessions", "",
              f"Memory per live session, folded by `State::apply` into the directory: **{mem['bytes_per_session']:.0f} bytes** "
              f"({mem['sessions']:,} sessions, two per user, each with an IPv4 address and a 40-byte user agent)."]
lines += ["", "Every acknowledged event was found committed in both store measurements.", "",
          "## Targets", "", "| figure | measured | target | met |", "|---|---|---|---|"]
for t in targets:
    lines.append(f"| {t['figure']} | {t['value']}{' · ' + t['note'] if t['note'] else ''} | {t['target']} | {'yes' if t['met'] else '**no**'} |")
(out / "report.md").write_text("\n".join(lines) + "\n")
