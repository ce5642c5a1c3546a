"""`ng911 demo`: what `make demo` runs.

For now it parses a sample emergency INVITE (what a caller sends for 911 from Times Square)
and prints what each element of the chain reads from it; the testbed issue turns it into
the full run of every scenario.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from ng911.sip.body import find_part, parse_multipart
from ng911.sip.parse import parse_message
from ng911.sip.samples import emergency_invite
from ng911.sip.uri import URN


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help="run the main demo on the embedded defaults")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
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
