"""Interop: the load rig itself — SIPp → Kamailio (stateful proxy) → SIPp, UDP and TCP.

What `bench/load.py` relies on, checked in seconds: `kamailio.stateful_proxy_cfg` relays
calls with `record_route(); t_relay()`; `sipp/uac_plain.xml` and `sipp/uas.xml` complete
calls through a record-routing proxy (ACK and BYE follow the route set), with two Kamailio
workers (so a 180 may overtake a 200 and a BYE an ACK); the emergency scenario goes through
the same proxy too.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ng911.interop.kamailio import Kamailio, missing_reason, stateful_proxy_cfg
from ng911.interop.procs import free_port
from ng911.interop.sipp import MISSING, SIPP, run_sipp, sipp_args, start_sipp, stop_sipp

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(SIPP is None, reason=MISSING),
]

REASON = missing_reason("tm", "rr", "sl", "maxfwd", "textops", "siputils")


@pytest.mark.skipif(REASON is not None, reason=REASON or "")
@pytest.mark.parametrize("transport", ["udp", "tcp"])
@pytest.mark.parametrize("scenario", ["uac_plain.xml", "uac_emergency.xml"])
async def test_calls_through_kamailio(tmp_path: Path, transport: str, scenario: str) -> None:
    uas_port, kport = free_port(), free_port()
    tparam = ";transport=tcp" if transport == "tcp" else ""
    cfg = stateful_proxy_cfg(
        port=kport, next_hop=f"sip:127.0.0.1:{uas_port}{tparam}", children=2, debug=1
    )
    kam = Kamailio(cfg, kport, "udp", shm_mb=128)
    await asyncio.to_thread(kam.start)
    uas = None
    try:
        (tmp_path / "uas").mkdir()
        uas = await start_sipp(
            sipp_args("uas.xml", transport=transport, port=uas_port, calls=40), tmp_path / "uas"
        )
        await asyncio.sleep(0.3)
        args = sipp_args(
            scenario,
            transport=transport,
            remote=f"127.0.0.1:{kport}",
            calls=40,
            keys={"uas": f"127.0.0.1:{uas_port}{tparam}", "dial": "urn:service:sos"},
            extra=["-s", "svc", "-r", "200"],
        )
        res = await run_sipp(args, tmp_path, timeout=20)
        assert res.returncode == 0, res.explain() + kam.log()
        # the UAS saw every call end (its -m 40 makes it exit 0)
        assert uas is not None
        uas_res = await asyncio.wait_for(uas.wait(), 10)
        uas = None
        assert uas_res == 0
    finally:
        if uas is not None:
            await stop_sipp(uas)
        await asyncio.to_thread(kam.stop)
