import datetime as dt

import pytest
from cryptography import x509

from ng911.pki.errors import PkiError
from ng911.pki.testpki import build_test_pki, cached_key


def test_build_default_three_domains(tmp_path):
    pki = build_test_pki(tmp_path)
    assert set(pki.cas) == {"vsp", "esinet", "psap"}
    assert {"ua", "vsp-proxy", "esrp", "psap", "calltaker", "lost"} <= set(pki.certs)
    esrp = x509.load_pem_x509_certificate(pki.cert("esrp").cert_path.read_bytes())
    assert esrp.issuer == pki.cas["esinet"].certificate().subject


def test_keys_are_cached_per_process(tmp_path):
    assert cached_key("ec", "x") is cached_key("ec", "x")
    a = build_test_pki(tmp_path / "a", cas=["vsp"])
    b = build_test_pki(tmp_path / "b", cas=["vsp"])
    ka = a.cas["vsp"].certificate().public_key()
    kb = b.cas["vsp"].certificate().public_key()
    assert ka == kb


def test_extra_certificates_and_errors(pki):
    c = pki.issue(
        "expired",
        ca="esinet",
        dns=["x.esinet.example"],
        not_before=dt.datetime.now(dt.UTC) - dt.timedelta(days=10),
        days=1,
    )
    assert c.cert_path.exists()
    with pytest.raises(PkiError, match="no certificate named"):
        pki.cert("nobody")
    with pytest.raises(PkiError, match="no CA named"):
        pki.ca_files(["nobody"])
