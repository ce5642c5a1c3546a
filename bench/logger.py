"""Does the i3 Logging Service change the set-up delay? The testbed with the logger on and off.

One process, rounds interleaved (off, deferred, live, off, deferred, live, ...), so the
machine's drifting background load falls on every mode alike. Each round is a whole
`ng911 testbed run` (`ng911.testbed.run.run_testbed`): fresh chains for `plain` and
`tls-all`, one cold call per borough, then warm calls at `--rate`. Modes:

- `off`: no logger (the chain as before the Logging Service);
- `deferred` (the testbed's default in one process): every element but the caller logs, its
  LogSender queues during the calls and maps, signs and sends once they are over;
- `live`: the LogSenders send during the calls (what a deployment does; in one process the
  logging shares the event loop with the elements being measured);
- `--processes`: the same three modes with each element its own process (deferred: each
  element process sends when it is stopped, `ng911 run --logger-defer`).

Per mode: the median of the rounds' warm-SRD medians and their spread (min-max of the round
medians), per scenario, and the LogEvents stored; written to bench/results/logger.json.

    .venv/bin/python bench/logger.py [--rounds 3] [--calls 40] [--rate 20] [--processes]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from ng911.testbed.plan import ChainOptions
from ng911.testbed.run import RunConfig, run_testbed
from rig import write_result

MODES = {
    "off": {"logger": False},
    "deferred": {"logger": True, "logger_defer": True},
    "live": {"logger": True, "logger_defer": False},
}


async def one_round(mode: str, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    chain = ChainOptions(hangup_after=0.05, processes=args.processes, **MODES[mode])
    cfg = RunConfig(
        scenarios=["plain", "tls-all"],
        calls=args.calls,
        rate=args.rate,
        out=out,
        chain=chain,
        captures=False,
    )
    t0 = time.perf_counter()
    res = await run_testbed(cfg)
    took = time.perf_counter() - t0
    row: dict[str, Any] = {"seconds": took, "failed": res.failed}
    for name, sc in res.results["scenarios"].items():
        row[name] = {
            "srd_p50": sc["warm"]["srd"]["p50"],
            "srd_mean": sc["warm"]["srd"]["mean"],
            "logevents": (sc.get("logevents") or {}).get("count", 0),
        }
    return row


def summarise(rows: list[dict[str, Any]], scenario: str) -> dict[str, float]:
    meds = [r[scenario]["srd_p50"] for r in rows]
    return {
        "median_of_medians": statistics.median(meds),
        "min": min(meds),
        "max": max(meds),
        "logevents_per_round": statistics.median(r[scenario]["logevents"] for r in rows),
        "seconds_per_round": statistics.median(r["seconds"] for r in rows),
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    modes = list(MODES)
    rows: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
    with tempfile.TemporaryDirectory(prefix="ng911-bench-logger-") as tmp:
        for i in range(args.rounds):
            for mode in modes:
                row = await one_round(mode, args, Path(tmp) / f"{i}-{mode}")
                rows[mode].append(row)
                print(
                    f"round {i + 1} {mode:<9} plain SRD p50 {row['plain']['srd_p50']:.3f} ms, "
                    f"tls-all {row['tls-all']['srd_p50']:.3f} ms, "
                    f"{row['plain']['logevents'] + row['tls-all']['logevents']} LogEvents, "
                    f"{row['seconds']:.1f} s",
                    flush=True,
                )
    summary = {m: {s: summarise(r, s) for s in ("plain", "tls-all")} for m, r in rows.items()}
    return {"config": dataclasses.asdict(Config.of(args)), "rounds": rows, "summary": summary}


@dataclasses.dataclass
class Config:
    rounds: int
    calls: int
    rate: float
    processes: bool

    @classmethod
    def of(cls, args: argparse.Namespace) -> Config:
        return cls(args.rounds, args.calls, args.rate, args.processes)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--calls", type=int, default=40, help="calls per scenario per round")
    ap.add_argument("--rate", type=float, default=20.0)
    ap.add_argument("--processes", action="store_true", help="each element its own process")
    args = ap.parse_args()
    out = asyncio.run(main_async(args))
    print()
    for mode, per in out["summary"].items():
        for sc, s in per.items():
            print(
                f"{mode:<9} {sc:<8} warm SRD p50: median {s['median_of_medians']:.3f} ms "
                f"(rounds {s['min']:.3f}-{s['max']:.3f}), {s['logevents_per_round']:.0f} "
                f"LogEvents, {s['seconds_per_round']:.1f} s a round"
            )
    write_result("logger-processes" if args.processes else "logger", out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
