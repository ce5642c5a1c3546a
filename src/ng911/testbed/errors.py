"""Typed errors of the testbed: a bad topology or scenario is the operator's mistake, said clearly.

These never reach the wire (the testbed is not a SIP element), so they carry no SIP status:
each says which file, which host or hop, and what was expected.
"""

from __future__ import annotations

from ng911.errors import Ng911Error


class TestbedError(Ng911Error):
    """Base of every testbed error."""

    __test__ = False  # not a pytest test class despite the name


class ScenarioError(TestbedError):
    """An unknown scenario name, or a scenario with a transport the testbed does not know."""


class TopologyError(TestbedError):
    """A topology file that cannot be read, or that names hosts, hops or transports wrongly."""
