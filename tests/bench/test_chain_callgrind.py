"""`bench/chain.py --callgrind`: what it runs under valgrind works, and bad counts are refused."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bench_scripts import BENCH, load_bench

chain = load_bench("chain")


def test_callgrind_argv_runs_one_scenario_and_writes_nothing(tmp_path: Path) -> None:
    # exactly what callgrind_per_call runs under valgrind (it appends --calls N), run natively
    argv = chain.callgrind_argv("plain", 4, "asyncio")
    results = BENCH / "results" / "chain.json"
    before = results.read_bytes() if results.exists() else None
    res = subprocess.run(
        [sys.executable, *argv, "--calls", "6"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert "plain" in res.stdout and "tls-all" not in res.stdout.split("goals")[0]
    after = results.read_bytes() if results.exists() else None
    assert after == before  # --no-write: the committed result is left alone


def test_callgrind_refuses_bad_counts() -> None:
    for spec in ("100", "300,100", "0,10", "a,b"):
        res = subprocess.run(
            [sys.executable, str(BENCH / "chain.py"), "--callgrind", spec],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert res.returncode != 0 and "--callgrind wants" in res.stderr, (spec, res.stderr)
