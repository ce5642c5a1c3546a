"""The hops of the emergency call chain, and which elements each one joins.

Observation assigns every recorded message to a hop by the pair of roles it travelled between;
scenarios (in `testbed/`) then say which transport each hop uses. The hop model lives here, below
both, so that `observe/` never reaches up into `testbed/`.
"""

from __future__ import annotations

# Roles in call order: the columns of a ladder diagram, the rows of a capture's address plan.
COLUMNS: tuple[str, ...] = ("caller", "vsp", "esrp", "lost", "psap", "calltaker")
# The SIP hops of the call chain, in call order, and the roles at each end (upstream, downstream).
HOPS: tuple[str, ...] = ("hop1", "hop2", "hop3", "hop4")
HOP_ROLES: dict[str, tuple[str, str]] = {
    "hop1": ("caller", "vsp"),
    "hop2": ("vsp", "esrp"),
    "hop3": ("esrp", "psap"),
    "hop4": ("psap", "calltaker"),
}
HOP_LABELS: dict[str, str] = {
    "hop1": "caller → VSP",
    "hop2": "VSP → ESRP",
    "hop3": "ESRP → PSAP",
    "hop4": "PSAP → call taker",
}


def hop_of_roles(a: str, b: str) -> str | None:
    """The hop between two roles (in either order), or None if they are not neighbours."""
    for hop, (up, down) in HOP_ROLES.items():
        if {a, b} == {up, down}:
            return hop
    return None
