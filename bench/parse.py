"""SIP parse and serialise throughput on one core, on the build that runs (pure or compiled).

Messages: the sample ~1.7 KB emergency INVITE (multipart/mixed: SDP + PIDF-LO), a 180 and a
200 with SDP (`ng911.sip.samples`). Variants:
  parse           parse_message() only (first line, header split, CSeq/Content-Length checks)
  proxy access    parse + what a stateful proxy reads: top Via branch, Route, Max-Forwards,
                  Call-ID (everything else stays text)
  validate        parse + Message.validate() (every structured header: what a UAS checks)
  full access     parse + validate() + every header value + the multipart body split (INVITE)
  serialise       to_bytes() of a parsed message
Each figure is the best of 5 runs of N operations, in this process on the build it runs
(`ng911.compiled.build()`: `make compile` / `make pure`, or NG911_PURE=1). Writes
bench/results/parse.json.

`--ab` compares the two builds: it runs this bench as child processes, pure and compiled
alternately (`--ab-rounds` each, best of them per figure, so both see the same moments of a
shared machine), prints both and their ratio, and writes bench/results/parse-ab.json.

    .venv/bin/python bench/parse.py [--quick] [--ab [--ab-rounds 3]]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from typing import Any

from goals import goal_row
from ng911 import compiled
from ng911.sip.body import parse_multipart
from ng911.sip.message import Request, Response
from ng911.sip.parse import parse_message
from ng911.sip.samples import emergency_invite, ok_with_sdp, ringing
from rig import best_rate, write_result

Message = Request | Response
COLS = (
    "parse_per_s",
    "proxy_access_per_s",
    "validate_per_s",
    "full_access_per_s",
    "serialise_per_s",
)
HEADS = ("parse/s", "proxy access/s", "validate/s", "full access/s", "serialise/s")
# issue 16: what the emergency INVITE should reach (per second, one core)
GOALS = {"parse_per_s": 30_000, "validate_per_s": 40_000}


def proxy_access(data: bytes) -> None:
    m = parse_message(data)
    _ = m.top_via.branch
    _ = m.headers.get_all("Route")
    _ = m.max_forwards
    _ = m.call_id


def validate(data: bytes) -> None:
    parse_message(data).validate()


def full_access(data: bytes) -> None:
    m = parse_message(data)
    m.validate()
    for name, _value in m.headers:
        m.headers.get_all(name)
    ctype = m.content_type
    if ctype and ctype.startswith("multipart/"):
        parse_multipart(ctype, m.body)


def measure(n: int) -> list[dict[str, Any]]:
    samples = {
        "INVITE (emergency, multipart)": emergency_invite(),
        "180 Ringing": ringing(),
        "200 OK (SDP)": ok_with_sdp(),
    }
    rows = []
    for label, data in samples.items():
        parsed = parse_message(data)
        rows.append(
            {
                "message": label,
                "bytes": len(data),
                "parse_per_s": best_rate(lambda d=data: parse_message(d), n),
                "proxy_access_per_s": best_rate(lambda d=data: proxy_access(d), n),
                "validate_per_s": best_rate(lambda d=data: validate(d), n),
                "full_access_per_s": best_rate(lambda d=data: full_access(d), n),
                "serialise_per_s": best_rate(parsed.to_bytes, n),
            }
        )
    return rows


def print_table(rows: list[dict[str, Any]], build: str) -> None:
    print(f"build: {build}")
    print(f"{'message':<32}{'bytes':>7}" + "".join(f"{h:>16}" for h in HEADS))
    for r in rows:
        print(f"{r['message']:<32}{r['bytes']:>7}" + "".join(f"{r[c]:>16,.0f}" for c in COLS))


def print_goals(by_build: dict[str, list[dict[str, Any]]]) -> None:
    """The emergency INVITE against issue 16's goals, per build."""
    builds = list(by_build)
    print(f"\n{'emergency INVITE':<22}" + "".join(f"{b:>12}" for b in builds) + f"{'goal':>12}")
    for col, goal in GOALS.items():
        cells = "".join(f"{by_build[b][0][col]:>12,.0f}" for b in builds)
        met = " ".join("met" if by_build[b][0][col] >= goal else "-" for b in builds)
        print(
            f"{col.removesuffix('_per_s') + '/s':<22}{cells}{'>= ' + format(goal, ','):>12}  {met}"
        )


def goal_rows(by_build: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The emergency INVITE's validate() rate against issue 16's goal (bench/goals.py), per
    build; with both builds, one row for the compiled one and the pure figure beside it."""
    what = "full message validation, `validate()` (emergency INVITE)"
    goal = GOALS["validate_per_s"]
    if "compiled" in by_build and "pure" in by_build:
        pure = by_build["pure"][0]["validate_per_s"]
        got = by_build["compiled"][0]["validate_per_s"]
        note = f"pure build {pure:,.0f}/s, same run"
        return [goal_row(f"{what}, compiled build", got, "msg/s", goal, note=note)]
    return [
        goal_row(f"{what}, {b} build", rows[0]["validate_per_s"], "msg/s", goal)
        for b, rows in by_build.items()
    ]


def ab(n: int, rounds: int) -> int:
    """Pure and compiled children, alternately; the best figure of each build."""
    if not all(compiled.extension_paths(m) for m in compiled.MODULES):
        print("no compiled build to compare with: run `make compile` first", file=sys.stderr)
        return 2
    best: dict[str, list[dict[str, Any]]] = {}
    for i in range(rounds):
        for build in ("pure", "compiled"):
            env = {k: v for k, v in os.environ.items() if k != compiled.PURE_ENV}
            if build == "pure":
                env[compiled.PURE_ENV] = "1"
            cmd = [sys.executable, __file__, "--child", "--n", str(n)]
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
            got = json.loads(out.stdout)
            assert got["build"] == build, got["build"]
            rows = got["results"]
            if build in best:
                for old, new in zip(best[build], rows, strict=True):
                    for c in COLS:
                        old[c] = max(old[c], new[c])
            else:
                best[build] = rows
            print(f"round {i + 1}/{rounds} {build}: done", file=sys.stderr)
    for build, rows in best.items():
        print_table(rows, build)
        print()
    print("compiled / pure")
    print(f"{'message':<39}" + "".join(f"{h:>16}" for h in HEADS))
    for p, c in zip(best["pure"], best["compiled"], strict=True):
        print(f"{p['message']:<39}" + "".join(f"{c[k] / p[k]:>15.2f}x" for k in COLS))
    print_goals(best)
    goals = goal_rows(best)
    out = {
        "benchmark": "parse-ab",
        "iterations": n,
        "repeats": 5,
        "rounds": rounds,
        **best,
        "goals": goals,
    }
    write_result("parse-ab", out)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer iterations (a smoke run)")
    ap.add_argument("--ab", action="store_true", help="pure vs compiled, alternating children")
    ap.add_argument("--ab-rounds", type=int, default=3, help="children per build with --ab")
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    n = args.n or (2_000 if args.quick else 20_000)
    if args.ab:
        return ab(n, args.ab_rounds)
    rows = measure(n)
    build = compiled.build()
    if args.child:
        print(json.dumps({"build": build, "results": rows}))
        return 0
    print_table(rows, build)
    print_goals({build: rows})
    inv = rows[0]
    print(
        f"\nemergency INVITE: {1e6 / inv['parse_per_s']:.1f} µs per parse, "
        f"{1e6 / inv['proxy_access_per_s']:.1f} µs with proxy access, "
        f"{1e6 / inv['validate_per_s']:.1f} µs with validate()"
    )
    out = {"benchmark": "parse", "iterations": n, "repeats": 5, "results": rows}
    write_result("parse", {**out, "goals": goal_rows({build: rows})})
    return 0


if __name__ == "__main__":
    sys.exit(main())
