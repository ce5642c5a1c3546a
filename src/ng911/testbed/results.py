"""The results' published form: the versioned schema of `results.json`, a validator for it,
and `calls.csv` (one row per call, the same records as `results.json`'s "call_records").

The schema ships in the package (`ng911/data/results.schema.json`, JSON Schema 2020-12) so a
reader can check a file without this code. `validate` implements the part of JSON Schema
that file uses (type, const, enum, required, properties, additionalProperties, items,
minimum, local `$ref`), so the project needs no validator package; any full JSON Schema
validator reads the same file.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from ng911.testbed.measure import CALL_COLUMNS

SCHEMA_VERSION = "1.0"  # major: a field removed or changed meaning; minor: fields added
_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list, tuple),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}


def schema() -> dict[str, Any]:
    """The packaged JSON Schema of `results.json`."""
    text = resources.files("ng911").joinpath("data/results.schema.json").read_text("utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


def _is(value: Any, name: str) -> bool:
    if isinstance(value, bool) and name in ("integer", "number"):
        return False  # JSON Schema: true is not 1
    return isinstance(value, _TYPES[name])


def validate(data: Any, schema_: Mapping[str, Any] | None = None) -> list[str]:
    """Every place `data` breaks the schema, as "path: what" lines (empty: valid)."""
    root = schema_ if schema_ is not None else schema()
    errors: list[str] = []
    _check(data, root, root, "$", errors, 0)
    return errors


def _resolve(root: Mapping[str, Any], ref: str) -> Mapping[str, Any]:
    if not ref.startswith("#/"):
        raise ValueError(f"only local $ref is supported, not {ref!r}")
    node: Any = root
    for part in ref[2:].split("/"):
        node = node[part]
    return dict(node)


def _check(
    v: Any, s: Mapping[str, Any], root: Mapping[str, Any], path: str, errors: list[str], depth: int
) -> None:
    if depth > 64 or len(errors) > 200:  # bounded: a hostile file cannot make this run away
        return
    if "$ref" in s:
        _check(v, _resolve(root, str(s["$ref"])), root, path, errors, depth + 1)
    t = s.get("type")
    if t is not None:
        names = [t] if isinstance(t, str) else list(t)
        if not any(_is(v, n) for n in names):
            errors.append(f"{path}: expected {' or '.join(names)}, got {type(v).__name__}")
            return
    if "const" in s and v != s["const"]:
        errors.append(f"{path}: must be {s['const']!r}, not {v!r}")
    if "enum" in s and v not in s["enum"]:
        errors.append(f"{path}: {v!r} not one of {s['enum']}")
    if "minimum" in s and _is(v, "number") and v < s["minimum"]:
        errors.append(f"{path}: {v} below {s['minimum']}")
    if isinstance(v, dict):
        for key in s.get("required", ()):
            if key not in v:
                errors.append(f"{path}: missing {key!r}")
        props: Mapping[str, Any] = s.get("properties", {})
        extra = s.get("additionalProperties", True)
        for key, item in v.items():
            if key in props:
                _check(item, props[key], root, f"{path}.{key}", errors, depth + 1)
            elif extra is False:
                errors.append(f"{path}: unexpected {key!r}")
            elif isinstance(extra, Mapping):
                _check(item, extra, root, f"{path}.{key}", errors, depth + 1)
    if isinstance(v, list | tuple) and isinstance(s.get("items"), Mapping):
        for i, item in enumerate(v):
            _check(item, s["items"], root, f"{path}[{i}]", errors, depth + 1)


def call_rows(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every scenario's call records, in scenario order then call order."""
    rows: list[dict[str, Any]] = []
    for res in (results.get("scenarios") or {}).values():
        rows.extend(res.get("call_records") or [])
    return rows


def write_calls_csv(results: Mapping[str, Any], path: Path) -> Path:
    """`calls.csv`: one row per call (`CALL_COLUMNS`); empty cells where a value is None."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(CALL_COLUMNS)
        for r in call_rows(results):
            w.writerow(_cell(r.get(c)) for c in CALL_COLUMNS)
    return path


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)
    return str(v)


def read_calls_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))
