import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ng911.pki.ca import init_ca, load_ca
from ng911.pki.errors import PkiError


def test_init_ec_ca_is_self_signed_root(tmp_path):
    ca = init_ca(tmp_path / "ca", name="ESInet test CA")
    cert = ca.certificate()
    assert cert.subject == cert.issuer
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert bc.ca and bc.path_length == 0
    assert isinstance(ca.private_key(), ec.EllipticCurvePrivateKey)
    assert (ca.key_path.stat().st_mode & 0o077) == 0  # key readable by owner only


def test_init_rsa_ca(tmp_path):
    ca = init_ca(tmp_path / "ca", key_type="rsa")
    key = ca.private_key()
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048


def test_init_refuses_to_overwrite(tmp_path):
    init_ca(tmp_path / "ca")
    with pytest.raises(PkiError, match="already holds a CA"):
        init_ca(tmp_path / "ca")


def test_unknown_key_type(tmp_path):
    with pytest.raises(PkiError, match="unknown key type"):
        init_ca(tmp_path / "ca", key_type="dsa")


def test_load_ca_roundtrip_and_missing(tmp_path):
    made = init_ca(tmp_path / "ca", name="VSP CA")
    loaded = load_ca(tmp_path / "ca")
    assert loaded.name == "VSP CA" and loaded.cert_path == made.cert_path
    with pytest.raises(PkiError, match="holds no CA"):
        load_ca(tmp_path / "nothing")


def test_load_ca_garbage(tmp_path):
    d = tmp_path / "ca"
    d.mkdir()
    (d / "ca.pem").write_text("not a cert")
    (d / "ca.key").write_text("not a key")
    with pytest.raises(PkiError, match="cannot read CA certificate"):
        load_ca(d)
