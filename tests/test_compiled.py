"""The two builds of the hot paths (ng911.compiled): which one runs, and that a stale or
unwanted compiled group is set aside for the pure one, all its modules together, with every
group that links to it.

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


def _copy_tree_edited(tmp_path: Path, *parts: str) -> None:
    """The compiled package copied, the `.py` at `parts` (under ng911/) then made newer than
    its extension module, as an edit after `make compile` would."""
    later = time.time() + 10
    os.utime(_copy_tree(tmp_path).joinpath(*parts), (later, later))


LINKED_PROBE = (
    "import ng911.compiled as c, ng911.sip.message as m, ng911.elements.runtime as r, "
    "ng911.net.transport as t, ng911.lost.engine as e\n"
    "print(*(x.__file__.rsplit('.', 1)[-1] for x in (m, r, t, e)))\n"
    "from ng911.elements.vsp import VspProxy\n"
    "from ng911.elements.config import VspConfig\n"
    "from ng911.sip import parse, samples\n"
    "msg = parse.parse_message(samples.emergency_invite())\n"
    "assert isinstance(msg, m.Request)\n"
    "print(type(VspProxy(VspConfig(name='v', esrp='sip:127.0.0.1:5070'))).__name__)"
)


@needs_compiled
def test_a_stale_build_runs_pure_all_together(tmp_path: Path) -> None:
    """A `.py` edited after `make compile`: its extension is old code, so its whole group
    runs pure (a compiled `parse` beside a pure `message` would make two Request classes),
    and stderr says why. The elements and the transports link to the SIP core natively: they
    run pure with it; the LoST group links only to the location group and stays compiled."""
    _copy_tree_edited(tmp_path, "sip", "uri.py")
    out = run(tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["mixed", "py", "so"]
    assert "older than their source (ng911.sip.uri)" in out.stderr
    assert "ng911.elements__mypyc, ng911.net__mypyc" in out.stderr
    out = run(tmp_path, code=LINKED_PROBE)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["py", "py", "py", "so", "VspProxy"]


@needs_compiled
def test_a_stale_transport_sets_aside_the_elements_not_the_core(tmp_path: Path) -> None:
    """The elements link to the transports, the transports to the SIP core: an edited
    transport module sets aside its group and the elements; the core stays compiled."""
    _copy_tree_edited(tmp_path, "net", "udp.py")
    out = run(tmp_path, code=LINKED_PROBE)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["so", "py", "py", "so", "VspProxy"]
    assert "(ng911.net.udp)" in out.stderr


@needs_compiled
def test_a_linked_group_never_built_sets_its_users_aside(tmp_path: Path) -> None:
    """The SIP core's library gone (never built here): the groups that call it natively
    cannot load; they run pure, and stderr names the missing group."""
    pkg = _copy_tree(tmp_path)
    for name in ("sip__mypyc", *(f"sip/{m.rsplit('.', 1)[-1]}" for m in compiled.GROUPS[
            "ng911.sip__mypyc"])):  # fmt: skip
        for f in pkg.glob(f"{name}.*so"):
            f.unlink()
    out = run(tmp_path, code=LINKED_PROBE)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["py", "py", "py", "so", "VspProxy"]
    assert "a group they link to is not built (ng911.sip__mypyc)" in out.stderr


@needs_compiled
def test_a_stale_location_module_sets_aside_lost_and_the_elements(tmp_path: Path) -> None:
    """The LoST path and the elements read PIDF-LO and shapes through the location group
    natively: an edited location module sets aside all three; the SIP core and the
    transports, which link to none of them, stay compiled."""
    _copy_tree_edited(tmp_path, "location", "pidf.py")
    out = run(tmp_path, code=LINKED_PROBE)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["so", "py", "so", "py", "VspProxy"]
    assert "(ng911.location.pidf)" in out.stderr
    assert "ng911.lost__mypyc, ng911.elements__mypyc" in out.stderr


def test_links_name_only_groups() -> None:
    assert set(compiled.LINKS) == set(compiled.GROUPS)
    assert all(set(links) <= set(compiled.GROUPS) for links in compiled.LINKS.values())


@needs_compiled
def test_a_stale_lost_module_sets_only_its_group_aside(tmp_path: Path) -> None:
    _copy_tree_edited(tmp_path, "lost", "embedded.py")
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


def _compile_script():  # scripts/compile.py, loaded as a module (it is not a package's)
    import importlib.util

    path = SRC.parent / "scripts" / "compile.py"
    spec = importlib.util.spec_from_file_location("ng911_compile_script", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    before = os.environ.get(compiled.PURE_ENV)
    try:
        spec.loader.exec_module(mod)  # it sets NG911_PURE for its own process: undo that
    finally:
        if before is None:
            os.environ.pop(compiled.PURE_ENV, None)
        else:
            os.environ[compiled.PURE_ENV] = before
    return mod


def test_an_extension_module_of_no_group_is_a_stray() -> None:
    """A module taken out of a group leaves its extension module behind, which Python's
    importer would keep preferring to the `.py`: `make compile` removes it (a stray)."""
    before = os.environ.get(compiled.PURE_ENV)
    script = _compile_script()
    assert os.environ.get(compiled.PURE_ENV) == before  # the suite's build is left alone
    stray = SRC / "ng911" / "location" / "zz_no_such_module.cpython-311-x86_64-linux-gnu.so"
    stray.write_bytes(b"")  # a name nothing imports
    try:
        assert stray in script.built_files()
        assert script.strays() == [stray]
    finally:
        stray.unlink()
    assert script.strays() == []
