"""What the sans-I/O transaction layer costs per proxied call.

One call through a stateful proxy, as the transaction layer sees it: INVITE in (server
transaction, 100 Trying), INVITE out (client transaction), 180 and 200 back and forwarded,
BYE in and out, its 200 back and forwarded; table add, match and remove for each. Timers are
the caller's, so none fire here (the happy path). Two figures: with messages parsed afresh from
bytes for every call (what a proxy pays), and with the parsing taken out (the state machines and
table alone). Compare with the ~250 µs of CPU per call Kamailio spends in total (ANCHORS.md).

Run: .venv/bin/python bench/transactions.py [--calls N]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ng911 import compiled
from ng911.sip.message import Request, Response, make_response
from ng911.sip.parse import parse_message
from ng911.sip.transaction import (
    ServerTransaction,
    TransactionTable,
    client_transaction,
    server_transaction,
)

INVITE = (
    b"INVITE urn:service:sos SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKcaller1;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b"From: <sip:+12125550100@vsp.example>;tag=abc\r\n"
    b"To: <urn:service:sos>\r\n"
    b"Call-ID: bench-1@192.0.2.10\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Contact: <sip:caller@192.0.2.10:5060>\r\n"
    b"Content-Length: 0\r\n\r\n"
)
PROXY_VIA = "SIP/2.0/UDP 198.51.100.1:5060;branch=z9hG4bKproxy1"


def forwarded(req: Request) -> Request:
    out = req.copy()
    out.headers.prepend("Via", PROXY_VIA)
    return out


def one_call(
    table: TransactionTable, wire: dict[str, bytes] | None, pre: dict[str, Request | Response]
) -> None:
    def msg(name: str) -> Request | Response:
        return parse_message(wire[name]) if wire is not None else pre[name]

    invite = msg("invite")
    assert isinstance(invite, Request)
    if table.match_request(invite) is None:
        st = server_transaction(invite, reliable=False)
        table.add(st)
        st.start()
        st.send_trying()
    out_invite = forwarded(invite)
    ct = client_transaction(out_invite, reliable=False)
    table.add(ct)
    ct.start()

    def relay_response(name: str, server: ServerTransaction) -> None:
        """The response `name` to its client transaction, and upstream through `server`."""
        resp = msg(name)
        assert isinstance(resp, Response)
        tx = table.match_response(resp)
        assert tx is not None
        tx.on_response(resp)
        up = resp.copy()
        up.headers.remove_first("Via")
        server.send_response(up)

    for name in ("r180", "r200"):
        relay_response(name, st)
    bye = msg("bye")
    assert isinstance(bye, Request)
    bst = server_transaction(bye, reliable=False)
    table.add(bst)
    bst.start()
    bct = client_transaction(forwarded(bye), reliable=False)
    table.add(bct)
    bct.start()
    relay_response("bye200", bst)
    for t in (st, ct, bst, bct):
        table.remove(t)


def messages() -> dict[str, bytes]:
    invite = parse_message(INVITE)
    assert isinstance(invite, Request)
    out = forwarded(invite)
    bye = invite.copy()
    bye.method = "BYE"
    bye.headers.set("CSeq", "2 BYE")
    bye.headers.set("Via", "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKcallerbye")
    bye_out = forwarded(bye)
    return {
        "invite": INVITE,
        "r180": make_response(out, 180, to_tag="t1").to_bytes(),
        "r200": make_response(out, 200, to_tag="t1").to_bytes(),
        "bye": bye.to_bytes(),
        "bye200": make_response(bye_out, 200).to_bytes(),
    }


def measure(calls: int, *, parse: bool) -> float:
    wire = messages()
    table = TransactionTable()
    pre: dict[str, Request | Response] = {}
    if not parse:
        pre = {k: parse_message(v) for k, v in wire.items()}
        for m in pre.values():  # warm the lazy header caches: parsing is taken out
            _ = (m.branch, m.cseq, m.top_via)
    start = time.process_time()
    for _ in range(calls):
        one_call(table, wire if parse else None, pre)
    return (time.process_time() - start) / calls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=20_000)
    args = ap.parse_args()
    measure(500, parse=True)  # warm-up
    rows = []
    for parse in (True, False):
        per_call = min(measure(args.calls, parse=parse) for _ in range(3))
        rows.append(
            {
                "what": "parse + transactions" if parse else "transactions + table only",
                "us_per_call": round(per_call * 1e6, 1),
                "calls_per_s_one_core": round(1 / per_call),
            }
        )
    build = compiled.build()
    print(f"build: {build}")
    print(f"{'what':<28} {'µs/call':>9} {'calls/s/core':>13}")
    for r in rows:
        print(f"{r['what']:<28} {r['us_per_call']:>9} {r['calls_per_s_one_core']:>13}")
    out = Path(__file__).parent / "results" / "transactions.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"build": build, "calls": args.calls, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
