"""The two builds of the hot paths (ng911.compiled): which one runs, and that a stale or
unwanted compiled group is set aside for the pure one, all its modules together.

Each case runs a fresh interpreter (the choice is made once, when `ng911` is imported).
The compiled cases need `make compile` to have run (as `make test` does); on a pure tree
they are skipped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ng911 import compiled

SRC = Path(compiled.__file__).resolve().parents[1]
IS_COMPILED = all(compiled.extension_paths(m) for m in (*compiled.MODULES, *compiled.GROUPS))
needs_compiled = pytest.mark.skipif(not IS_COMPILED, reason="no compiled build (make compile)")

PROBE = (
    "import ng911.compiled as c, ng911.sip.parse as p, ng911.sip.message as m, "
    "ng911.sip.samples as s, ng911.lost.engine as e\n"
    "msg = p.parse_message(s.emergency_invite()); msg.validate()\n"
    "assert isinstance(msg, m.Request)\n"
    "print(c.build(), m.__file__.rsplit('.', 1)[-1], e.__file__.rsplit('.', 1)[-1])"
)


def run(src: Path, *, pure: bool = False, code: str = PROBE) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != compiled.PURE_ENV}
    env["PYTHONPATH"] = str(src)
    if pure:
        env[compiled.PURE_ENV] = "1"
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )


def test_pure_when_asked() -> None:
    out = run(SRC, pure=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["pure", "py", "py"]
    assert out.stderr == ""  # asked for: no notice


def test_version_names_the_build() -> None:
    out = run(SRC, pure=True, code="import sys; from ng911.cli import main; main(['--version'])")
    assert "pure-Python build (NG911_PURE is set)" in out.stdout


@needs_compiled
def test_compiled_build_runs_when_present() -> None:
    out = run(SRC)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["compiled", "so", "so"]


def _copy_tree(tmp_path: Path) -> Path:
    """The compiled package, copied (sources and extension modules, times kept)."""
    shutil.copytree(SRC / "ng911", tmp_path / "ng911", ignore=shutil.ignore_patterns("__pycache__"))
    assert run(tmp_path).stdout.split() == ["compiled", "so", "so"]
    return tmp_path / "ng911"


@needs_compiled
def test_a_stale_build_runs_pure_all_together(tmp_path: Path) -> None:
    """A `.py` edited after `make compile`: its extension is old code, so its whole group
    runs pure (a compiled `parse` beside a pure `message` would make two Request classes),
    and stderr says why; the other group stays compiled."""
    pkg = _copy_tree(tmp_path)
    later = time.time() + 10
    os.utime(pkg / "sip" / "uri.py", (later, later))
    out = run(tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["mixed", "py", "so"]
    assert "older than their source (ng911.sip.uri)" in out.stderr


@needs_compiled
def test_a_stale_lost_module_sets_only_its_group_aside(tmp_path: Path) -> None:
    pkg = _copy_tree(tmp_path)
    later = time.time() + 10
    os.utime(pkg / "lost" / "embedded.py", (later, later))
    out = run(tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["mixed", "so", "py"]
    assert "(ng911.lost.embedded)" in out.stderr
    # the whole group: the engine beside it is pure too, and the LoST path still answers
    code = (
        "import ng911.lost.fast_request as f, ng911.lost.engine as e, ng911.lost.embedded as s\n"
        "print(f.__file__[-2:], e.__file__[-2:], s.__file__[-2:])\n"
        "from ng911.lost.server import LostServer\n"
        "from ng911.lost.protocol import *\n"
        "from ng911.location.geodetic import Point\n"
        "srv = LostServer(s.EmbeddedStore.from_geojson())\n"
        "req = FindServiceRequest((LostLocation('l', 'geodetic-2d', Point(40.78, -73.97)),))\n"
        "print(b'nyc-boro-1' in srv.decide(build_request(req)))"
    )
    out = run(tmp_path, code=code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["py", "py", "py", "True"]


@needs_compiled
def test_a_group_never_built_is_pure_without_a_notice(tmp_path: Path) -> None:
    pkg = _copy_tree(tmp_path)
    for name in ("lost__mypyc", "lost/fast_request", "lost/engine", "lost/embedded"):
        for f in pkg.glob(f"{name}.*so"):
            f.unlink()
    out = run(tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["mixed", "so", "py"]
    assert out.stderr == ""
