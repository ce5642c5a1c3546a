"""Layering: `ng911.location` imports only `ng911.errors` of ng911 (and lxml, shapely, numpy)."""

from __future__ import annotations

import ast
from pathlib import Path

import ng911.location

ALLOWED_THIRD_PARTY = {"lxml", "shapely", "numpy"}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_location_imports_point_down_only() -> None:
    package = Path(ng911.location.__file__).parent
    for path in sorted(package.glob("*.py")):
        for name in _imports(path):
            top = name.split(".")[0]
            if top == "ng911":
                assert name == "ng911.errors" or name.startswith("ng911.location"), (path, name)
            else:
                assert top in ALLOWED_THIRD_PARTY or top in _stdlib(), (path, name)


def _stdlib() -> frozenset[str]:
    import sys

    return frozenset(sys.stdlib_module_names) | {"__future__"}
