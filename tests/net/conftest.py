"""Fixtures for transport tests: a session test PKI and elements closed after each test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
from nethelpers import Element

from ng911.net import SipTransportLayer
from ng911.pki.testpki import TestPki, build_test_pki


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    return build_test_pki(tmp_path_factory.mktemp("netpki"))


MakeElement = Callable[..., Element]


@pytest.fixture
async def make_element() -> AsyncIterator[MakeElement]:
    made: list[Element] = []

    def make(name: str = "el", *, answer: bool = True, **kw: object) -> Element:
        el = Element(SipTransportLayer(element=name, **kw), answer=answer)  # type: ignore[arg-type]
        made.append(el)
        return el

    yield make
    for el in made:
        await el.layer.close()
