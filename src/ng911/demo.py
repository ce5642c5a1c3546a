"""`ng911 demo`: what `make demo` runs — the testbed, on the embedded defaults.

Every scenario of DESIGN.md (plain, tcp, tls-e2e, tls-vsp-psap, tls-all) on the packaged
New York City topology: the whole chain (caller, VSP proxy, ESRP with its LoST server, one
PSAP and call taker per borough) in this process, 50 calls per scenario from the five
boroughs, then `report.html` (set-up delay tables, CDF, where the delay goes, one ladder
diagram per scenario), `results.json`, per-hop message logs, per-hop pcapng captures and the TLS key
log under `runs/<timestamp>/`. The i3 Logging Service runs in every chain: the elements' signed
LogEvents are sent once each scenario's calls are over (so they cost the measured calls
nothing), read back from its store, verified, and listed by call in `<scenario>/
logevents.html`; the demo ends with their count by type. About 40 seconds; no flags needed.

`ng911 demo --invite` prints the sample emergency INVITE and what each element reads from
it (the SIP core's own demo).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser(
        "demo",
        help="run the main demo on the embedded defaults (every scenario of the testbed)",
        description=(
            "Run every testbed scenario on the packaged NYC topology and write report.html; "
            "`ng911 testbed run --help` has every knob."
        ),
    )
    p.add_argument("--calls", type=int, default=50, help="calls per scenario (default 50)")
    p.add_argument("--out", type=Path, help="run directory (default runs/<UTC timestamp>)")
    p.add_argument("--quiet", action="store_true", help="print only where the report is")
    p.add_argument(
        "--invite",
        action="store_true",
        help="instead: parse and show the sample emergency INVITE",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if getattr(args, "invite", False):
        return show_invite()
    from ng911.errors import Ng911Error
    from ng911.testbed.run import RunConfig
    from ng911.testbed.run import run as run_testbed

    calls = getattr(args, "calls", 50)
    if calls < 1:
        print("ng911 demo: --calls must be at least 1", file=sys.stderr)
        return 2
    cfg = RunConfig(
        calls=calls,
        out=getattr(args, "out", None),
        progress=None if getattr(args, "quiet", False) else sys.stdout,
    )
    t0 = time.perf_counter()
    try:
        result = run_testbed(cfg)
    except Ng911Error as exc:
        print(f"ng911 demo: {exc}", file=sys.stderr)
        return 2
    took = time.perf_counter() - t0
    scen = result.results["scenarios"]
    total = sum(int(r["calls"]) for r in scen.values())
    print()
    print(f"{total} calls in {took:.0f} s, {result.failed} failed.")
    print(f"report:   {result.report.resolve()}")
    print(f"captures: {result.run_dir.resolve()}/<scenario>/hopN.pcapng (TLS keys inside), e.g.")
    print(f"  tshark -N n -r {result.run_dir}/tls-all/hop2.pcapng -Y sip")
    for line in logevents_summary(scen, result.run_dir):
        print(line)
    return 1 if result.failed else 0


def logevents_summary(scenarios: dict[str, Any], run_dir: Path) -> list[str]:
    """The demo's last lines: the LogEvents every scenario's logger stored, by type, and how
    many verified (JWS + x5c against the run's CA, read back from the store after the run)."""
    entries = {n: r["logevents"] for n, r in scenarios.items() if r.get("logevents")}
    if not entries:
        return ["i3 LogEvents: none (no logger in this run)"]
    total = sum(int(e.get("count", 0)) for e in entries.values())
    verified = sum(int(e.get("verified", 0)) for e in entries.values())
    by_type: dict[str, int] = {}
    for e in entries.values():
        for k, v in (e.get("by_type") or {}).items():
            by_type[k] = by_type.get(k, 0) + int(v)
    ok = "all signatures verified" if verified == total else f"{total - verified} NOT VERIFIED"
    out = [f"i3 LogEvents: {total} stored by the scenarios' loggers, {ok}:"]
    out += [f"  {v:>6}  {k}" for k, v in sorted(by_type.items(), key=lambda kv: -kv[1])]
    page = next((e["html"] for e in entries.values() if e.get("html")), None)
    if page:
        out.append(f"  by call: {(run_dir / page).resolve()} (and logevents.jsonl beside it)")
    return out


def show_invite() -> int:
    """The SIP core's demo: parse the sample emergency INVITE, show what elements read."""
    from ng911.sip.body import find_part, parse_multipart
    from ng911.sip.parse import parse_message
    from ng911.sip.samples import emergency_invite
    from ng911.sip.uri import URN

    data = emergency_invite()
    t0 = time.perf_counter()
    msg = parse_message(data)
    parse_us = (time.perf_counter() - t0) * 1e6
    print(f"ng911 demo: a sample emergency INVITE ({len(data)} bytes, parsed in {parse_us:.0f} µs)")
    print()
    print(f"  {msg.first_line}")
    uri = getattr(msg, "uri", None)
    if isinstance(uri, URN):
        print(f"  Request-URI is an emergency service URN: {uri.is_emergency} ({uri.service})")
    top = msg.top_via
    print(f"  {'top Via':<20} {top.transport} {top.sent_by} branch={top.branch}")
    print(f"  {'From':<20} {msg.from_addr}")
    print(f"  {'To':<20} {msg.to_addr}")
    print(f"  {'Call-ID':<20} {msg.call_id}")
    print(f"  {'CSeq':<20} {msg.cseq}")
    print(f"  {'Max-Forwards':<20} {msg.max_forwards}")
    for name in ("Contact", "Geolocation", "Geolocation-Routing", "Content-Type"):
        print(f"  {name:<20} {msg.headers.get_field(name)}")
    ctype = msg.content_type or "(none)"
    if not ctype.startswith("multipart/"):
        return 0
    print()
    print("  body parts:")
    for i, part in enumerate(parse_multipart(ctype, msg.body), 1):
        cid = f"  Content-ID <{part.content_id}>" if part.content_id else ""
        print(f"    {i}. {part.mime:<22} {len(part.body):>5} bytes{cid}")
    geo = msg.headers.get("Geolocation") or ""
    cid = geo.strip("<> ")
    pidf = find_part(ctype, msg.body, content_id=cid) if cid.startswith("cid:") else None
    if pidf is not None:
        print()
        print(f"  location by value ({cid}, RFC 6442), the PIDF-LO:")
        for line in pidf.body.decode(errors="replace").splitlines():
            print(f"    {line}")
    return 0
