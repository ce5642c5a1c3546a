"""Reading a host bundle (`ng911 testbed export` writes them, `ng911 run --bundle` runs one).

Here, below the testbed, because the node runs a bundle on a machine that has only it: the
format is `bundle.toml` with a `[bundle]` table (host, role, format) and the host's element
table, every path in it relative to the bundle directory.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from ng911.elements.config import ConfigError

BUNDLE_FILE = "bundle.toml"
FORMAT = 1


def read_bundle(directory: Path) -> tuple[str, str, Path]:
    """(host, role, bundle.toml) of a bundle directory; a clear error when it is not one."""
    path = directory / BUNDLE_FILE
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{directory}: not an ng911 bundle (no {BUNDLE_FILE})") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    head = data.get("bundle")
    if not isinstance(head, dict) or not {"host", "role"} <= set(head):
        raise ConfigError(f"{path}: no [bundle] table with host and role")
    if head.get("format", FORMAT) != FORMAT:
        raise ConfigError(f"{path}: bundle format {head.get('format')!r}, this ng911 reads 1")
    host, role = str(head["host"]), str(head["role"])
    if host not in data:
        raise ConfigError(f"{path}: no [{host}] table")
    return host, role, path
