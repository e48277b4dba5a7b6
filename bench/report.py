#!/usr/bin/env python3
"""Turns the benchmark's raw results (one JSON file per measurement) into report.json and
report.md, with each figure's ratio to its bound and each target met or missed."""
import datetime
import json
import pathlib
import sys

results, out, smoke = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3] == "1"
raw = {path.stem: json.loads(path.read_text()) for path in sorted(results.glob("*.json"))}

bcrypt = raw["bcrypt"]["hashes_per_second"]
ceiling = raw["ceiling-64"]["per_second"]
stores = ["embedded", "postgres"]
ratios, targets = {}, []


def target(name, value, goal, met, note=""):
    targets.append({"figure": name, "value": value, "target": goal, "met": bool(met), "note": note})


for store in stores:
    login, p64, p1024 = raw[f"{store}-login-16"], raw[f"{store}-profile-64"], raw[f"{store}-profile-1024"]
    # 16 connections share the cores: a login waits for the 15 ahead of it, `cores` at a time.
    queue_ms = 16 / bcrypt * 1000
    ratios[store] = {
        "login_to_bcrypt_bound": login["per_second"] / bcrypt,
        "profile_to_http_ceiling": p64["per_second"] / ceiling,
        "login_p99_to_queue": login["p99_ms"] / queue_ms,
    }
    target(f"POST /login ({store})", f"{ratios[store]['login_to_bcrypt_bound']:.0%} of bound, "
           f"p99 {login['p99_ms']:.0f} ms (queue implies {queue_ms:.0f} ms)",
           "≥ 90 % of bcrypt bound; p99 ≤ queue", ratios[store]["login_to_bcrypt_bound"] >= 0.9
           and login["p99_ms"] <= queue_ms * 1.25 and login["non_2xx"] == 0,
           f"{login['non_2xx']} non-2xx")
    target(f"GET /profile, 64 connections ({store})",
           f"{ratios[store]['profile_to_http_ceiling']:.0%} of ceiling, p99 {p64['p99_ms']:.2f} ms",
           "≥ 50 % of ceiling, p99 < 5 ms",
           ratios[store]["profile_to_http_ceiling"] >= 0.5 and p64["p99_ms"] < 5)
    target(f"GET /profile, 1,024 connections ({store})",
           f"{p1024['socket_errors']} socket errors, {p1024['non_2xx']} non-2xx, max {p1024['max_ms']:.0f} ms",
           "no stall or error", p1024["socket_errors"] == 0 and p1024["non_2xx"] == 0)
    st = raw[f"store-{store}"]
    group, single = st["group_commit"]["per_second"], st["one_per_transaction"]["per_second"]
    ratios[store]["group_commit_to_single"] = group / single
    goal = "≥ 10× one-per-transaction" + (", ≥ 5,000/s" if store == "postgres" else "")
    target(f"store appends, group commit ({store})", f"{group:,.0f}/s, {group / single:.1f}× ({single:,.0f}/s one per transaction)",
           goal, group / single >= 10 and (store != "postgres" or group >= 5000))
    cold = raw[f"coldstart-{store}"]
    target(f"cold start, {cold['users']:,} users and {cold['logins']:,} logins ({store})",
           f"{cold['replay_seconds']:.1f} s, {cold['bytes_per_user']:.0f} bytes/user; verify {cold['verify_seconds']:.1f} s",
           "< 10 s, < 300 bytes/user", cold["replay_seconds"] < 10 and cold["bytes_per_user"] < 300)

report = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
          "smoke": smoke, "machine": raw["machine"], "bounds": {
              "bcrypt_hashes_per_second": bcrypt, "bcrypt_cost": raw["bcrypt"]["cost"],
              "bcrypt10_hashes_per_second": raw.get("bcrypt10", {}).get("hashes_per_second"),
              "http_ceiling_per_second": ceiling},
          "ratios": ratios, "targets": targets, "raw": raw}
(out / "report.json").write_text(json.dumps(report, indent=2) + "\n")

m = raw["machine"]
lines = [
    "# authlog benchmark report", "",
    f"{report['date']} · {m['cores']} cores ({m['cpu']}) · load average before the run "
    f"{', '.join(f'{x:.2f}' for x in m['load_average'])} · {m['memory_bytes'] / 2**30:.0f} GiB",
    "", "Produced by `bench/run.sh`; the load generator (wrk, 2 threads) runs on the same machine.",
]
if smoke:
    lines += ["", "**Smoke run: debug build, tiny sizes, 2-second runs. The figures mean nothing.**"]
lines += ["", "## Bounds, measured in the same run", "",
          "| bound | figure |", "|---|---|",
          f"| bcrypt, cost {raw['bcrypt']['cost']}, every core | {bcrypt:,.1f} hashes/s |"]
if "bcrypt10" in raw:
    lines.append(f"| bcrypt, cost 10, every core | {raw['bcrypt10']['hashes_per_second']:,.1f} hashes/s |")
c = raw["ceiling-64"]
lines += [f"| plain actix-web handler, 2 workers, 64 connections | {ceiling:,.0f} req/s (p50 {c['p50_ms']:.2f} ms, p99 {c['p99_ms']:.2f} ms) |",
          "", "## Endpoints", "",
          "| store | endpoint | connections | req/s | p50 ms | p99 ms | p99.9 ms | errors | ratio to bound |",
          "|---|---|---|---|---|---|---|---|---|"]
for store in stores:
    for name, endpoint, conns, ratio in [
        (f"{store}-login-16", "POST /login", 16, ratios[store]["login_to_bcrypt_bound"]),
        (f"{store}-profile-64", "GET /profile", 64, ratios[store]["profile_to_http_ceiling"]),
        (f"{store}-profile-1024", "GET /profile", 1024, raw[f"{store}-profile-1024"]["per_second"] / ceiling)]:
        r = raw[name]
        lines.append(f"| {store} | {endpoint} | {conns} | {r['per_second']:,.0f} | {r['p50_ms']:.2f} | "
                     f"{r['p99_ms']:.2f} | {r['p999_ms']:.2f} | {r['socket_errors'] + r['non_2xx']} | {ratio:.0%} |")
lines += ["", "## Store and cold start (no HTTP, no bcrypt)", "",
          "| store | group commit | one transaction per event | ratio | cold start replay | memory per user | verify |",
          "|---|---|---|---|---|---|---|"]
for store in stores:
    st, cold = raw[f"store-{store}"], raw[f"coldstart-{store}"]
    lines.append(f"| {store} | {st['group_commit']['per_second']:,.0f}/s | {st['one_per_transaction']['per_second']:,.0f}/s | "
                 f"{ratios[store]['group_commit_to_single']:.1f}× | {cold['replay_seconds']:.1f} s ({cold['users']:,} users, "
                 f"{cold['logins']:,} logins) | {cold['bytes_per_user']:.0f} B | {cold['verify_seconds']:.1f} s ({cold['verified_events']:,} events) |")
lines += ["", "Every acknowledged event was found committed in both store measurements.", "",
          "## Targets", "", "| figure | measured | target | met |", "|---|---|---|---|"]
for t in targets:
    lines.append(f"| {t['figure']} | {t['value']}{' · ' + t['note'] if t['note'] else ''} | {t['target']} | {'yes' if t['met'] else '**no**'} |")
analysis = pathlib.Path("bench/analysis.md")
if analysis.exists() and not smoke:
    lines += ["", analysis.read_text().rstrip()]
(out / "report.md").write_text("\n".join(lines) + "\n")
