"""The measured scenarios: which transport each SIP hop uses, and LoST's.

The five scenarios of DESIGN.md. `plain` is the baseline every other one is compared with;
`tls-e2e` and `tls-vsp-psap` are the source paper's two TLS deployments (caller all the way to
the PSAP server; VSP proxy to PSAP server only), `tls-all` adds the call-taker hop and mutual
HTTPS to LoST. A hop is *encrypted* when its transport is TLS (RFC 3261 §26.2.1: TLS protects
one hop, which is exactly what the ladder diagram colours).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ng911.observe.hops import HOPS
from ng911.testbed.errors import ScenarioError

SIP_TRANSPORTS: tuple[str, ...] = ("udp", "tcp", "tls")
SECURE_SIP_TRANSPORTS: frozenset[str] = frozenset({"tls"})
LOST_TRANSPORTS: tuple[str, ...] = ("http", "https")


@dataclass(frozen=True, slots=True)
class Scenario:
    """One measured configuration: a transport per hop, LoST's scheme, and mutual TLS to LoST."""

    name: str
    hops: tuple[str, str, str, str]
    lost: str = "http"
    lost_mutual: bool = False
    description: str = ""
    # (role, implementation) pairs replacing the topology's, e.g. (("vsp", "kamailio"),):
    # the same transports with a production proxy in that place (testbed/peers.py)
    implementations: tuple[tuple[str, str], ...] = ()

    def variant(self, role: str, implementation: str) -> Scenario:
        """This scenario with `implementation` running the `role` host: `plain+kamailio-vsp`."""
        impls = (*((r, i) for r, i in self.implementations if r != role), (role, implementation))
        return dataclasses.replace(
            self,
            name=f"{self.name}+{implementation}-{role}",
            implementations=impls,
            description=f"{self.description} ({implementation} as the {role})",
        )

    def __post_init__(self) -> None:
        for t in self.hops:
            if t not in SIP_TRANSPORTS:
                raise ScenarioError(
                    f"scenario {self.name!r}: transport {t!r} is not one of "
                    f"{', '.join(SIP_TRANSPORTS)}"
                )
        if self.lost not in LOST_TRANSPORTS:
            raise ScenarioError(
                f"scenario {self.name!r}: LoST transport {self.lost!r} is not http or https"
            )
        if self.lost_mutual and self.lost != "https":
            raise ScenarioError(f"scenario {self.name!r}: mutual TLS to LoST needs https")

    def transport(self, hop: str) -> str:
        """The transport of `hop` ("hop1".."hop4")."""
        try:
            return self.hops[HOPS.index(hop)]
        except ValueError:
            raise ScenarioError(f"unknown hop {hop!r}; hops are {', '.join(HOPS)}") from None

    def encrypted(self, hop: str) -> bool:
        """True when `hop` is protected by TLS (drawn green in the ladder diagram)."""
        return self.transport(hop) in SECURE_SIP_TRANSPORTS

    @property
    def transports(self) -> dict[str, str]:
        return dict(zip(HOPS, self.hops, strict=True))

    @property
    def lost_encrypted(self) -> bool:
        return self.lost == "https"

    def summary(self) -> str:
        """One line: `udp,tls,tls,udp / http`."""
        mutual = " (mutual)" if self.lost_mutual else ""
        return f"{','.join(self.hops)} / {self.lost}{mutual}"


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("plain", ("udp", "udp", "udp", "udp"), "http", description="baseline: no TLS"),
        Scenario("tcp", ("tcp", "tcp", "tcp", "tcp"), "http", description="connections, no TLS"),
        Scenario(
            "tls-e2e",
            ("tls", "tls", "tls", "udp"),
            "http",
            description="paper: TLS from the caller all the way to the PSAP server",
        ),
        Scenario(
            "tls-vsp-psap",
            ("udp", "tls", "tls", "udp"),
            "http",
            description="paper: TLS from the VSP proxy to the PSAP server only",
        ),
        Scenario(
            "tls-all",
            ("tls", "tls", "tls", "tls"),
            "https",
            lost_mutual=True,
            description="beyond the paper: TLS on every hop, mutual HTTPS to LoST",
        ),
    )
}
BASELINE = "plain"


def get_scenario(name: str) -> Scenario:
    """The scenario called `name`; a ScenarioError listing the known ones otherwise."""
    try:
        return SCENARIOS[name]
    except KeyError:
        raise ScenarioError(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}") from None


def select(names: list[str] | tuple[str, ...] | None) -> list[Scenario]:
    """The scenarios to run, in table order; all when `names` is empty. Duplicates dropped."""
    if not names:
        return list(SCENARIOS.values())
    wanted = {get_scenario(n).name for n in names}
    return [s for s in SCENARIOS.values() if s.name in wanted]
