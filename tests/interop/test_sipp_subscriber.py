"""Interop: SIPp as an i3 state subscriber of a real psapd (RFC 6665, NENA-STA-010.3 §2.4.2).

`sipp/subscribe_queuestate.xml` SUBSCRIBEs to emergency-QueueState, gets the immediate
NOTIFY (Subscription-State active, the JSON QueueState, checked by SIPp's `ereg` on the
body), answers it, unsubscribes (Expires: 0) and gets the terminated NOTIFY. SIPp exits 0
only if every message came and every check held; its log holds the values it read.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ng911.elements.config import ListenerConfig, PsapConfig, StateConfig
from ng911.elements.psap import Psapd
from ng911.interop.sipp import MISSING, SCENARIOS, SIPP, run_sipp, sipp_args

pytestmark = [pytest.mark.interop, pytest.mark.skipif(SIPP is None, reason=MISSING)]

FQDN = "psap.example"


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_sipp_subscribes_to_queue_state_and_unsubscribes(
    tmp_path: Path, transport: str
) -> None:
    psap = Psapd(
        PsapConfig(
            name="psap",
            fqdn=FQDN,
            domain=FQDN,
            listeners=(ListenerConfig(transport, "127.0.0.1", 0),),
            queue_size=3,
            state=StateConfig(min_expires=1, default_expires=60, notify_interval=0.05),
        ),
        log_keep=1000,
    )
    await psap.start()
    try:
        port = psap.local(transport).port
        args = sipp_args(
            "subscribe_queuestate.xml",
            transport=transport,
            remote=f"127.0.0.1:{port}",
            keys={"target": f"sip:{FQDN}:{port}"},
            extra=["-trace_logs"],
        )
        res = await run_sipp(args, tmp_path, timeout=20)
        assert res.returncode == 0, res.explain()
        logs = "".join(p.read_text() for p in tmp_path.glob("*_logs.log"))
        # what SIPp read: the JSON body's empty queue of a psapd without call takers
        # (Inactive: i3 "no call takers"), the headers, then the terminated state
        active, terminated = logs.splitlines()[:2]
        assert active.split() == [
            "QUEUESTATE",
            "active",
            '"queueLength":0',
            '"state":"Inactive"',
            "emergency-QueueState",
            "application/json",
        ], logs
        assert terminated.split() == ["QUEUESTATE", "terminated"], logs
        assert psap.log.find("subscribed") and psap.log.find("unsubscribed")
        assert not psap.log.find("notify_refused")  # SIPp answered both NOTIFYs 200
        assert len(psap.events.notifier) == 0  # nothing left subscribed
    finally:
        await psap.close()


def test_the_scenario_is_package_data() -> None:
    assert (SCENARIOS / "subscribe_queuestate.xml").is_file()
