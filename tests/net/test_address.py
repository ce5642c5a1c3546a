import pytest

from ng911.net.address import Address, Source


def test_address_validates_and_prints():
    a = Address("tls", "127.0.0.1", 5061)
    assert str(a) == "tls:127.0.0.1:5061" and a.reliable and a.hostport == ("127.0.0.1", 5061)
    assert str(Address("udp", "::1", 5060)) == "udp:[::1]:5060"
    assert not Address("udp", "h", 1).reliable
    with pytest.raises(ValueError, match="unknown transport"):
        Address("sctp", "h", 1)


def test_source_secure():
    s = Source(Address("tls", "h", 1), Address("tls", "l", 2), frozenset({"a"}), 7)
    assert s.secure and s.transport == "tls"
