"""LogEvent JWS: flattened JSON serialisation, x5c in the protected header, chain to our CA."""

from __future__ import annotations

import base64
import datetime as dt
import json
import time
from pathlib import Path

import pytest

from ng911.i3log.errors import AlgorithmError, CertificateChainError, SignatureError
from ng911.i3log.events import CallStartLogEvent, rfc3339
from ng911.i3log.jws import Signer, Verifier
from ng911.pki.errors import PkiError
from ng911.pki.testpki import ElementSpec, TestPki, build_test_pki


def _event() -> CallStartLogEvent:
    return CallStartLogEvent(
        timestamp=rfc3339(time.time()),
        element_id="esrp.esinet.example",
        agency_id="esinet.example",
        call_id="urn:emergency:uid:callid:0123456789abcdef:esrp.esinet.example",
        direction="incoming",
    )


def _b64(obj: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def _header(jws: dict[str, str]) -> dict[str, object]:
    p = jws["protected"]
    return json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))


def test_ec_element_signs_es256_with_x5c_and_verifies(signer, verifier):
    jws = signer.sign(_event())
    assert set(jws) == {"protected", "payload", "signature"}  # RFC 7515 §7.2.2, i3's Jws
    header = _header(jws)
    assert header["alg"] == "ES256"
    x5c = header["x5c"]
    assert isinstance(x5c, list) and len(x5c) == 2  # leaf + its CA, standard base64 DER
    base64.b64decode(x5c[0], validate=True)
    out = verifier.verify(json.dumps(jws))
    assert json.loads(out.payload)["logEventType"] == "CallStartLogEvent"
    assert "esrp" in out.signer


def test_rsa_element_signs_rs256(rsa_pki: TestPki):
    c = rsa_pki.cert("esrp")
    signer = Signer.from_files(c.chain_path, c.key_path)
    assert signer.alg == "RS256"
    out = Verifier.from_files(rsa_pki.ca_files()).verify(signer.sign(_event()))
    assert b"CallStartLogEvent" in out.payload


def test_tampered_payload_fails_signature(signer, verifier):
    jws = signer.sign(_event())
    d = json.loads(base64.urlsafe_b64decode(jws["payload"] + "=="))
    d["elementId"] = "mallory"
    jws["payload"] = _b64(d)
    with pytest.raises(SignatureError, match="does not verify") as err:
        verifier.verify(jws)
    assert err.value.code == 434


def test_alg_none_and_unlisted_algorithms_are_refused(signer, verifier):
    jws = signer.sign(_event())
    for alg in ("none", "HS256", None):
        h = _header(jws)
        h["alg"] = alg
        with pytest.raises(AlgorithmError) as err:
            verifier.verify({**jws, "protected": _b64(h)})
        assert err.value.code == 438


def test_missing_or_broken_x5c_is_refused(signer, verifier):
    jws = signer.sign(_event())
    h = _header(jws)
    for x5c, why in ((None, "no x5c"), ([], "list of 1"), (["!!"], "x5c\\[0\\]"),
                     ([base64.b64encode(b"junk").decode()], "not a DER")):  # fmt: skip
        bad = dict(h)
        if x5c is None:
            del bad["x5c"]
        else:
            bad["x5c"] = x5c
        with pytest.raises(CertificateChainError, match=why):
            verifier.verify({**jws, "protected": _b64(bad)})


def test_signer_of_another_ca_is_refused(tmp_path: Path, pki: TestPki):
    rogue = build_test_pki(
        tmp_path, cas=("rogue",), elements=[ElementSpec("mallory", "rogue", ("m.example",))]
    )
    c = rogue.cert("mallory")
    jws = Signer.from_files(c.chain_path, c.key_path).sign(_event())
    with pytest.raises(CertificateChainError, match="does not chain to a configured CA"):
        Verifier.from_files(pki.ca_files()).verify(jws)
    # and an element of one of our CAs, checked against another of them only
    esrp = pki.cert("esrp")
    jws = Signer.from_files(esrp.chain_path, esrp.key_path).sign(_event())
    with pytest.raises(CertificateChainError):
        Verifier.from_files(pki.ca_files(["vsp"])).verify(jws)


def test_expired_signer_is_refused(pki: TestPki):
    old = pki.issue(
        "expired-esrp",
        ca="esinet",
        dns=("old.esinet.example",),
        days=1,
        not_before=dt.datetime.now(dt.UTC) - dt.timedelta(days=10),
    )
    jws = Signer.from_files(old.chain_path, old.key_path).sign(_event())
    with pytest.raises(CertificateChainError, match="not valid at validation time"):
        Verifier.from_files(pki.ca_files()).verify(jws)


def test_a_remembered_chain_is_checked_again_at_expiry_and_after_its_ttl(
    signer: Signer, verifier: Verifier, pki: TestPki
):
    jws = signer.sign(_event())
    verifier.verify(jws)  # validated: remembered for this protected header
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=3650)
    with pytest.raises(CertificateChainError, match="not valid at validation time"):
        verifier.verify(jws, now=later)  # past the leaf's validity: validated again, refused
    assert verifier.verify(jws).payload  # now again: fine
    tampered = dict(jws, signature=jws["signature"][::-1])
    with pytest.raises(SignatureError):  # the signature is checked every time
        verifier.verify(tampered)
    other_ca = Verifier.from_files(pki.ca_files(["vsp"])).store
    verifier.store = other_ca  # within the TTL the remembered validation stands
    assert verifier.verify(jws).payload
    strict = Verifier(verifier.cas, chain_ttl=0.0)
    strict.verify(jws)
    strict.store = other_ca  # TTL 0: validated every time, against the CAs of now
    with pytest.raises(CertificateChainError):
        strict.verify(jws)


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"garbage", "not JSON"),
        (b"[]", "not a JSON object"),
        (b'{"payload": "e30", "signatures": []}', "general JWS"),
        (b'{"payload": "e30", "signature": "x"}', "'protected' missing"),
        (b'{"protected": "%%%", "payload": "e30", "signature": "x"}', "base64url"),
        (b'{"protected": "bm90IGpzb24", "payload": "e30", "signature": "x"}', "not JSON"),
    ],
)
def test_malformed_jws_is_a_clear_error(verifier, body, why):
    with pytest.raises(SignatureError, match=why):
        verifier.verify(body)


def test_signer_key_must_match_its_certificate(pki: TestPki):
    with pytest.raises(PkiError, match="does not belong"):
        Signer.from_files(pki.cert("esrp").chain_path, pki.cert("psap").key_path)
