"""Which build is running: the mypyc-compiled hot paths, or pure Python.

`scripts/compile.py` (`make compile`) compiles the modules of each group in `GROUPS` with
mypyc into extension modules beside their sources (`message.cpython-311-x86_64-linux-gnu.so`
next to `message.py`, and the group's shared library `sip__mypyc…so`); Python's importer
prefers an extension module over a `.py` in the same directory, so nothing else changes.
`make pure` removes them. The `.py` files stay the source of truth and the pure build always
works.

Five groups: the sans-I/O SIP core (`ng911.sip__mypyc`), the PIDF-LO and shape readers
(`ng911.location__mypyc`), the LoST server's point path (`ng911.lost__mypyc`), the elements'
hot path (`ng911.elements__mypyc`: the runtime, the proxies, their per-request policy, the
ESRP's LoST client and the user agents) and the transports' per-message path
(`ng911.net__mypyc`: UDP, TCP/TLS streams, the transport layer, their events, the HTTP
client an ESRP asks LoST with). One mypyc run
builds them all, each its own library, and a group calls the groups it uses (`LINKS`)
natively: the elements read a Request's fields and call the transaction layer as C, not
through Python's attribute lookup. So a group runs compiled only beside the compiled build
of every group it links to (a compiled `elements` beside a pure `sip` would make two
`Request` classes), and a group's own modules run all together or not at all. `choose()`,
run when `ng911` is first imported, keeps a group pure when

- `NG911_PURE` is set (not empty, not `0`): every group, the pure build from a compiled tree,
  as CI's second run and the benchmarks' A/B use it; child processes inherit it;
- any `.py` of the group is newer than its extension module, or a module of a group built at
  all has none (edited since `make compile`): the stale extension would silently run old
  code, so the pure group runs instead, with one line on stderr saying so;
- a group it links to runs pure (for either reason above, or was never built).

`build()` says which build this process runs (`compiled`, `pure`, or `mixed` when only some
groups run compiled), for `ng911 --version` and the benchmarks' JSON.
"""

from __future__ import annotations

import importlib.machinery
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import ModuleType

# What mypyc compiles, by group (a group's shared library: mypyc's `group_name` + `__mypyc`,
# inside the package so that any way of installing it finds it). The SIP core: what every
# message and transaction passes through; the LoST point path: what a findService for a
# point runs (docs/architecture.md, "Compiled build"). Read by scripts/compile.py too.
GROUPS: dict[str, tuple[str, ...]] = {
    "ng911.sip__mypyc": (
        "ng911.sip.errors",
        "ng911.sip.uri",
        "ng911.sip.headers",
        "ng911.sip.message",
        "ng911.sip.parse",
        "ng911.sip.body",
        "ng911.sip.transaction",
        "ng911.sip.dialog",
        "ng911.sip.digest",
        "ng911.sip.priority",
        "ng911.sip.subscription",
    ),
    "ng911.location__mypyc": (
        "ng911.location.ns",
        "ng911.location.xml",
        "ng911.location.gml",
        "ng911.location.pidf",
        "ng911.location.conveyance",
    ),
    "ng911.lost__mypyc": (
        "ng911.lost.fast_request",
        "ng911.lost.engine",
        "ng911.lost.embedded",
    ),
    "ng911.elements__mypyc": (
        "ng911.elements.scheduling",
        "ng911.elements.contexts",
        "ng911.elements.addressing",
        "ng911.elements.runtime",
        "ng911.elements.proxy",
        "ng911.elements.vsp",
        "ng911.elements.esrp",
        "ng911.elements.psap",
        "ng911.elements.admitting",
        "ng911.elements.overload",
        "ng911.elements.dialogs",
        "ng911.elements.emergency",
        "ng911.elements.intake",
        "ng911.elements.routing",
        "ng911.elements.identifiers",
        "ng911.elements.prf",
        "ng911.lost.client",
        "ng911.elements.media",
        "ng911.elements.ua",
        "ng911.elements.calltaker",
    ),
    "ng911.net__mypyc": (
        "ng911.net.address",
        "ng911.net.sips",
        "ng911.net.events",
        "ng911.net.udp",
        "ng911.net.stream",
        "ng911.net.transport",
        "ng911.net.http1client",
    ),
}
#: Every compiled module, all groups.
MODULES: tuple[str, ...] = tuple(m for mods in GROUPS.values() for m in mods)
# the groups whose library each group's compiled code calls natively (scripts/compile.py
# checks this against what mypyc generated): a group runs pure when one of these does
LINKS: dict[str, tuple[str, ...]] = {
    "ng911.sip__mypyc": (),
    "ng911.location__mypyc": (),
    "ng911.lost__mypyc": ("ng911.location__mypyc",),
    "ng911.elements__mypyc": ("ng911.sip__mypyc", "ng911.location__mypyc", "ng911.net__mypyc"),
    "ng911.net__mypyc": ("ng911.sip__mypyc",),
}
#: The SIP core's group (the first).
GROUP = "ng911.sip__mypyc"
PURE_ENV = "NG911_PURE"
_SRC = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_pure_reason: str | None = None


def source_path(name: str) -> str:
    """The `.py` file of module `name` (one of `MODULES`)."""
    return os.path.join(_SRC, *name.split(".")) + ".py"


def extension_paths(name: str) -> list[str]:
    """The extension module files of `name` present on disk (any ABI suffix)."""
    base = os.path.join(_SRC, *name.split("."))
    return [base + s for s in importlib.machinery.EXTENSION_SUFFIXES if os.path.exists(base + s)]


def stale_modules(group: str | None = None) -> list[str]:
    """Modules of `group` (default: every group) whose extension is missing or older than
    their `.py`; a group with nothing compiled at all has none (it is just pure)."""
    out: list[str] = []
    for name, modules in GROUPS.items():
        if group is not None and name != group:
            continue
        stale: list[str] = []
        any_built = False
        for mod in (*modules, name):
            exts = extension_paths(mod)
            if not exts:
                stale.append(mod)
                continue
            any_built = True
            if mod == name:
                continue
            if os.path.getmtime(source_path(mod)) > min(os.path.getmtime(e) for e in exts):
                stale.append(mod)
        if any_built:
            out += stale
    return out


class _PureFinder:
    """Finds the `.py` of the modules of the pure groups, ahead of the extension modules
    beside them (a meta path finder; not derived from `importlib.abc.MetaPathFinder`, whose
    import costs every `ng911` process 25 ms)."""

    def __init__(self, modules: frozenset[str]) -> None:
        self.modules = modules

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self.modules:
            return None
        import importlib.util  # here: `import ng911` stays cheap

        return importlib.util.spec_from_file_location(fullname, source_path(fullname))


def _built(group: str) -> bool:
    return any(extension_paths(m) for m in (*GROUPS[group], group))


def pure_groups() -> tuple[list[str], list[str], list[str]]:
    """The groups that must run pure on this tree, the stale modules and the groups never
    built that are why: a stale group, and every group that links (`LINKS`) to one running
    pure or never built. (Run at every `import ng911`: each group's files are looked at once.)"""
    stale_of = {g: stale_modules(g) for g in GROUPS}
    stale = [m for mods in stale_of.values() for m in mods]
    pure = {g for g, mods in stale_of.items() if mods}
    missing = {g for g in GROUPS if g not in pure and not _built(g)}
    grew = True
    while grew:  # links of links: elements -> net -> sip
        grew = False
        for group, links in LINKS.items():
            if (
                group not in pure
                and group not in missing
                and any(d in pure or d in missing for d in links)
            ):
                pure.add(group)
                grew = True
    return [g for g in GROUPS if g in pure], stale, [g for g in GROUPS if g in missing]


def choose() -> None:
    """Use the pure build of every group when asked (`NG911_PURE`), and of each group whose
    compiled modules are stale or which links to a group running pure."""
    global _pure_reason
    if any(m in sys.modules for m in MODULES) or _pure_reason is not None:
        return  # too late to choose, or chosen already
    if os.environ.get(PURE_ENV, "") not in ("", "0"):
        _pure_reason = f"{PURE_ENV} is set"
        pure = frozenset(MODULES)
    else:
        groups, stale, missing = pure_groups()
        if not groups:
            return
        pure = frozenset(m for name in groups for m in GROUPS[name])
        if stale:
            _pure_reason = "the compiled modules are older than their source"
            detail = ", ".join(stale)
        else:
            _pure_reason = "a group they link to is not built"
            detail = ", ".join(missing)
        print(
            f"ng911: {_pure_reason} ({detail}): running pure Python for "
            f"{', '.join(groups)} (`make compile` rebuilds them, `make pure` removes them)",
            file=sys.stderr,
        )
    sys.meta_path.insert(0, _PureFinder(pure))


def _group_compiled(modules: tuple[str, ...]) -> bool:
    import importlib.util

    spec = importlib.util.find_spec(modules[0])
    origin = spec.origin if spec is not None else None
    return origin is not None and origin.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))


def build() -> str:
    """`compiled` when every group runs as mypyc extension modules, `pure` when none does,
    `mixed` otherwise (a group never built, or set aside as stale)."""
    compiled = [_group_compiled(mods) for mods in GROUPS.values()]
    return "compiled" if all(compiled) else "mixed" if any(compiled) else "pure"


def describe() -> str:
    """`compiled build`, `pure-Python build`, with why when a compiled one was set aside."""
    got = build()
    if got == "compiled":
        return "compiled build (mypyc)"
    why = f" ({_pure_reason})" if _pure_reason else ""
    if got == "mixed":
        names = [n for n, mods in GROUPS.items() if _group_compiled(mods)]
        return f"partly compiled build (mypyc: {', '.join(names)}){why}"
    return "pure-Python build" + why


__all__ = [
    "GROUP",
    "GROUPS",
    "LINKS",
    "MODULES",
    "PURE_ENV",
    "build",
    "choose",
    "describe",
    "extension_paths",
    "pure_groups",
    "source_path",
    "stale_modules",
]
