"""SIP parse and serialise throughput on one core.

Messages: the sample ~1.7 KB emergency INVITE (multipart/mixed: SDP + PIDF-LO), a 180 and a
200 with SDP (`ng911.sip.samples`). Variants:
  parse           parse_message() only (first line, header split, CSeq/Content-Length checks)
  proxy access    parse + what a stateful proxy reads: top Via branch, Route, Max-Forwards,
                  Call-ID (everything else stays text)
  full access     parse + validate() (every structured header) + every header value
                  + the multipart body split (INVITE)
  serialise       to_bytes() of a parsed message
Each figure is the best of 5 runs of N operations. Writes bench/results/parse.json.

    .venv/bin/python bench/parse.py [--quick]
"""

from __future__ import annotations

import argparse
import sys

from ng911.sip.body import parse_multipart
from ng911.sip.message import Request, Response
from ng911.sip.parse import parse_message
from ng911.sip.samples import emergency_invite, ok_with_sdp, ringing
from rig import best_rate, write_result

Message = Request | Response


def proxy_access(data: bytes) -> None:
    m = parse_message(data)
    _ = m.top_via.branch
    _ = m.headers.get_all("Route")
    _ = m.max_forwards
    _ = m.call_id


def full_access(data: bytes) -> None:
    m = parse_message(data)
    m.validate()
    for name, _value in m.headers:
        m.headers.get_all(name)
    ctype = m.content_type
    if ctype and ctype.startswith("multipart/"):
        parse_multipart(ctype, m.body)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer iterations (a smoke run)")
    args = ap.parse_args()
    n = 2_000 if args.quick else 20_000
    samples = {
        "INVITE (emergency, multipart)": emergency_invite(),
        "180 Ringing": ringing(),
        "200 OK (SDP)": ok_with_sdp(),
    }
    rows = []
    for label, data in samples.items():
        parsed = parse_message(data)
        row = {
            "message": label,
            "bytes": len(data),
            "parse_per_s": best_rate(lambda d=data: parse_message(d), n),
            "proxy_access_per_s": best_rate(lambda d=data: proxy_access(d), n),
            "full_access_per_s": best_rate(lambda d=data: full_access(d), n),
            "serialise_per_s": best_rate(parsed.to_bytes, n),
        }
        rows.append(row)

    cols = ("parse_per_s", "proxy_access_per_s", "full_access_per_s", "serialise_per_s")
    heads = ("parse/s", "proxy access/s", "full access/s", "serialise/s")
    print(f"{'message':<32}{'bytes':>7}" + "".join(f"{h:>16}" for h in heads))
    for r in rows:
        line = f"{r['message']:<32}{r['bytes']:>7}"
        line += "".join(f"{r[c]:>16,.0f}" for c in cols)
        print(line)
    inv = rows[0]
    print(
        f"\nemergency INVITE: {1e6 / inv['parse_per_s']:.1f} µs per parse, "
        f"{1e6 / inv['proxy_access_per_s']:.1f} µs with proxy access, "
        f"{1e6 / inv['full_access_per_s']:.1f} µs with full access (target: >= 30,000 parses/s)"
    )
    out = {
        "benchmark": "parse",
        "iterations": n,
        "repeats": 5,
        "results": rows,
    }
    write_result("parse", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
