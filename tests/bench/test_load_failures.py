"""`bench/load.py` says why a step failed: SIPp's per-cause counters, in words."""

from __future__ import annotations

from bench_scripts import load_bench


def test_failed_calls_are_told_apart_by_cause() -> None:
    load = load_bench("load")
    main = {
        "FailedCall(C)": "416",
        "FailedUnexpectedMessage(C)": "400",
        "FailedMaxUDPRetrans(C)": "16",
        "FailedTcpClosed(C)": "0",
        "SuccessfulCall(C)": "9",
    }
    probe = {"FailedCall(C)": "2", "FailedUnexpectedMessage(C)": "2"}
    kinds = load.failure_kinds([main, probe])
    assert kinds == {"unexpected message": 402, "max UDP retrans": 16}
    step = load.Step("ng911", "udp", 750, calls=2310, ok=1892, failed=418, failed_by=kinds)
    load._finish(step, [0.002] * 100)
    assert not step.passed
    assert step.why == "418 failed calls (402 unexpected message, 16 max UDP retrans)"
    assert load.failure_kinds([{}]) == {}


def test_settle_waits_for_the_proxy_to_go_idle_and_no_longer_than_its_bound() -> None:
    load = load_bench("load")

    class Busy:
        """A proxy's CPU seconds: busy for `busy_windows` windows, then idle."""

        def __init__(self, busy_windows: int) -> None:
            self.cpu = 0.0
            self.busy = busy_windows

        def cpu_seconds(self) -> float:
            return self.cpu

    clock = [0.0]

    def make_sleep(t: Busy):  # type: ignore[no-untyped-def]
        def sleep(dt: float) -> None:
            clock[0] += dt
            if t.busy:
                t.busy -= 1
                t.cpu += 0.4 * dt  # 40 % of a core
            else:
                t.cpu += 0.01 * dt

        return sleep

    t = Busy(4)
    waited = load.settle(t, sleep=make_sleep(t), clock=lambda: clock[0])
    assert waited == 2.5  # four busy windows, then the first idle one
    clock[0] = 0.0
    forever = Busy(10**6)
    assert load.settle(forever, sleep=make_sleep(forever), clock=lambda: clock[0], limit=3) == 3


def test_a_peer_that_dies_in_a_step_is_restarted_once_and_the_step_run_again() -> None:
    """Kamailio 5.6.3 aborted at the start of its 8-connection TLS ladder in 2 of 3 runs
    (a double free in its TLS module with OpenSSL 3): the ladder measured nothing. Now the
    peer is started again once and the step repeated; a second death ends the ladder."""
    load = load_bench("load")

    class Peer(load.Target):
        name = "peer"

        def __init__(self) -> None:
            self.up = True
            self.starts = 0

        def alive(self) -> bool:
            return self.up

    peer = Peer()
    outcomes = iter([False, True, True, False])  # the first step dies, then passes...

    def attempt(rate: int) -> object:
        ok = next(outcomes)
        peer.up = ok
        return load.Step("peer", "tls", rate, passed=ok, why="" if ok else "188 failed calls")

    def restart() -> None:
        peer.starts += 1
        peer.up = True

    restarts: list[int] = []
    lines: list[str] = []
    step = load.restart_once(peer, attempt, restart, restarts, lines.append)
    lad = load.ladder(peer, "tls", [500, 1000, 1500], step, lines.append, bisect=False)
    assert [s.rate for s in lad.steps] == [500, 1000, 1500]
    assert [s.passed for s in lad.steps] == [True, True, False]  # the second death: not again
    assert restarts == [500] and peer.starts == 1
    assert "died: started again" in lines[0]

    # ng911 is never restarted: its targets are alive() whatever happened, and a failed
    # step stays failed
    ng = load.Ng911Target()
    assert ng.alive()
