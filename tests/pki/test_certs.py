import datetime as dt

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from ng911.pki.ca import init_ca
from ng911.pki.certs import issue
from ng911.pki.errors import PkiError
from ng911.pki.tls import peer_identities


def _load(path):
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_issue_has_sip_uri_dns_ip_sans_and_both_ekus(tmp_path):
    ca = init_ca(tmp_path / "ca")
    c = issue(
        ca,
        "esrp",
        dns=["esrp.esinet.example"],
        sip_domains=["esinet.example"],
        ips=["127.0.0.1"],
        out_dir=tmp_path / "out",
    )
    cert = _load(c.cert_path)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["sip:esinet.example"]
    assert san.get_values_for_type(x509.DNSName) == ["esrp.esinet.example"]
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku and ExtendedKeyUsageOID.CLIENT_AUTH in eku
    assert cert.issuer == ca.certificate().subject
    # chain = leaf then CA
    chain = c.chain_path.read_bytes()
    assert chain.startswith(c.cert_path.read_bytes()) and chain.endswith(ca.cert_path.read_bytes())
    assert peer_identities(cert) == {"esinet.example"}


def test_sip_domain_normalised_and_user_part_refused(tmp_path):
    ca = init_ca(tmp_path / "ca")
    c = issue(ca, "a", dns=[], sip_domains=["sips:VSP.Example"], out_dir=tmp_path)
    assert peer_identities(_load(c.cert_path)) == {"vsp.example"}
    with pytest.raises(PkiError, match="no user"):
        issue(ca, "b", dns=[], sip_domains=["alice@vsp.example"], out_dir=tmp_path)


@pytest.mark.parametrize(
    ("kw", "msg"),
    [
        ({"dns": []}, "at least one"),
        ({"dns": ["x"], "ips": ["300.1.1.1"]}, "invalid IP"),
        ({"dns": ["  "]}, "empty DNS"),
    ],
)
def test_issue_bad_input(tmp_path, kw, msg):
    ca = init_ca(tmp_path / "ca")
    with pytest.raises(PkiError, match=msg):
        issue(ca, "x", out_dir=tmp_path, **kw)


def test_bad_name(tmp_path):
    ca = init_ca(tmp_path / "ca")
    with pytest.raises(PkiError, match="invalid certificate name"):
        issue(ca, "../evil", dns=["a"], out_dir=tmp_path)


def test_rsa_leaf_and_custom_validity(tmp_path):
    ca = init_ca(tmp_path / "ca")
    start = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    c = issue(
        ca, "old", dns=["a.example"], out_dir=tmp_path, key_type="rsa", days=2, not_before=start
    )
    cert = _load(c.cert_path)
    assert cert.not_valid_after_utc == start + dt.timedelta(days=2)
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.key_encipherment
