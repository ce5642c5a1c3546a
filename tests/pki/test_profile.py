import pytest

from ng911.pki.errors import PkiError
from ng911.pki.profile import TlsProfile, TlsProfiles


def test_profile_per_domain_with_default(pki):
    psap = pki.profile("esrp", domain="psap.example", trust=["psap"])
    default = pki.profile("esrp", trust=["esinet"])
    profiles = TlsProfiles.of([psap, default])
    assert profiles.for_domain("PSAP.example") is psap
    assert profiles.for_domain("other.example") is default
    ctx1, p1 = profiles.client_context_for("psap.example")
    ctx2, _ = profiles.client_context_for("psap.example")
    assert ctx1 is ctx2 and p1 is psap
    assert psap.identity_for("psap.example") == "psap.example"
    assert TlsProfile(expected_identity="X.example").identity_for("y") == "x.example"


def test_no_profile_and_server_without_cert():
    with pytest.raises(PkiError, match="no TLS profile"):
        TlsProfiles.of([TlsProfile(domain="a.example")]).for_domain("b.example")
    with pytest.raises(PkiError, match="no certificate"):
        TlsProfile().server_context()
