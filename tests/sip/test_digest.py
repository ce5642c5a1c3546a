"""HTTP Digest for SIP (RFC 3261 §22, RFC 7616, RFC 8760): codec, arithmetic, server."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ng911.sip.digest import (
    MAX_HEADER,
    Challenge,
    Credentials,
    DigestError,
    DigestServer,
    answer_challenge,
    choose_challenge,
    ha1,
    parse_challenge,
    parse_credentials,
    response,
)
from ng911.sip.errors import SipParseError

# ---------------------------------------------------------------- RFC 7616 §3.9.1

REALM = "http-auth@example.org"
NONCE = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"
OPAQUE = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_rfc7616_vector(algorithm: str, expected: str) -> None:
    """RFC 7616 §3.9.1: Mufasa / "Circle of Life", GET /dir/index.html, qop=auth."""
    got = response(
        algorithm,
        ha1(algorithm, "Mufasa", REALM, "Circle of Life"),
        method="GET",
        uri="/dir/index.html",
        nonce=NONCE,
        qop="auth",
        cnonce=CNONCE,
        nc="00000001",
    )
    assert got == expected
    ch = parse_challenge(
        f'Digest realm="{REALM}", qop="auth, auth-int", algorithm={algorithm}, '
        f'nonce="{NONCE}", opaque="{OPAQUE}"'
    )
    assert ch.qop == ("auth", "auth-int")
    creds = answer_challenge(
        ch,
        username="Mufasa",
        password="Circle of Life",
        method="GET",
        uri="/dir/index.html",
        cnonce=CNONCE,
    )
    assert creds.response == expected
    assert creds.nc == "00000001" and creds.opaque == OPAQUE
    # the RFC's Authorization header, as written there (folded onto one line)
    text = (
        f'Digest username="Mufasa", realm="{REALM}", uri="/dir/index.html", '
        f'algorithm={algorithm}, nonce="{NONCE}", nc=00000001, cnonce="{CNONCE}", '
        f'qop=auth, response="{expected}", opaque="{OPAQUE}"'
    )
    assert parse_credentials(text) == creds


def test_rfc2069_and_sess() -> None:
    h = ha1("MD5", "u", "r", "p")
    old = response("MD5", h, method="REGISTER", uri="sip:r", nonce="n", qop=None)
    assert len(old) == 32
    sess = response("SHA-256-sess", ha1("SHA-256", "u", "r", "p"), method="REGISTER",
                    uri="sip:r", nonce="n", cnonce="c", nc="00000001")  # fmt: skip
    plain = response("SHA-256", ha1("SHA-256", "u", "r", "p"), method="REGISTER",
                     uri="sip:r", nonce="n", cnonce="c", nc="00000001")  # fmt: skip
    assert len(sess) == 64 and sess != plain
    with pytest.raises(DigestError):
        response("MD5-sess", h, method="X", uri="u", nonce="n", qop=None)


# ---------------------------------------------------------------- codec


def test_parse_challenge_forms() -> None:
    ch = parse_challenge(
        'digest  realm = "a\\"b\\\\c" ,nonce="x",algorithm=md5 , stale=TRUE, foo=bar, Baz="q x"'
    )
    assert ch.realm == 'a"b\\c' and ch.algorithm == "MD5" and ch.stale
    assert ch.extra == (("foo", "bar"), ("Baz", "q x"))
    assert ch.qop == ()
    assert parse_challenge(str(ch)) == ch
    # absent algorithm means MD5 (RFC 7616 §3.3)
    assert parse_challenge('Digest realm="r", nonce="n"').algorithm == "MD5"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Basic realm=x",
        'Digest realm="r"',  # no nonce
        'Digest realm="r", nonce="n',  # unterminated
        'Digest realm="r", realm="s", nonce="n"',  # twice
        'Digest realm="r", nonce',  # no value
        'Digest realm="r", nonce=',  # empty value
        'Digest realm="r" nonce="n"',  # missing comma
        'Digest realm="r\x01", nonce="n"',  # control character
        'Digest realm="r", nonce="n\\',
        "Digest " + ", ".join(f"p{i}=v" for i in range(40)) + ', realm="r", nonce="n"',
        'Digest realm="' + "a" * 2000 + '", nonce="n"',
        "Digest " + "x" * (MAX_HEADER + 1),
        '=Digest realm="r", nonce="n"',
    ],
)
def test_hostile_challenges_raise_400(text: str) -> None:
    with pytest.raises(DigestError) as e:
        parse_challenge(text)
    assert isinstance(e.value, SipParseError) and e.value.status == 400
    assert len(e.value.reason) < 200  # never echoes the input unbounded


@pytest.mark.parametrize(
    "text",
    [
        'Digest username="u", realm="r", nonce="n", uri="sip:r"',  # no response
        'Digest username="u", realm="r", nonce="n", uri="sip:r", response="x", qop=auth',
        'Digest username="u", realm="r", nonce="n", uri="sip:r", response="x", qop=auth,'
        ' cnonce="c", nc=1',  # nc not 8 hex
        'Digest username="u", realm="r", nonce="n", uri="sip:r", response="x", nc=0000000g',
        'Bearer token="x"',
    ],
)
def test_bad_credentials_raise(text: str) -> None:
    with pytest.raises(DigestError):
        parse_credentials(text)


_SAFE = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\x7f"),
    max_size=30,
)
_TOKEN = st.text(string.ascii_letters + string.digits + "-._~!%", min_size=1, max_size=12)
_KNOWN = set(
    [
        "realm",
        "nonce",
        "algorithm",
        "qop",
        "opaque",
        "stale",
        "domain",
        "username",
        "uri",
        "response",
        "cnonce",
        "nc",
    ]
)
_EXTRA_NAME = _TOKEN.filter(lambda s: s.lower() not in _KNOWN)
_EXTRAS = st.lists(st.tuples(_EXTRA_NAME, st.one_of(_TOKEN, _SAFE.filter(bool))), max_size=4,
                   unique_by=lambda kv: kv[0].lower()).map(tuple)  # fmt: skip


@given(
    realm=_SAFE,
    nonce=_SAFE,
    algorithm=st.sampled_from(["MD5", "MD5-sess", "SHA-256", "SHA-256-sess", "X-Other"]),
    qop=st.sampled_from([(), ("auth",), ("auth", "auth-int")]),
    opaque=st.one_of(st.none(), _SAFE),
    stale=st.booleans(),
    extra=_EXTRAS,
)
def test_challenge_round_trip(realm, nonce, algorithm, qop, opaque, stale, extra) -> None:
    ch = Challenge(realm, nonce, algorithm, qop, opaque, stale, None, extra)
    assert parse_challenge(str(ch)) == ch


@given(
    username=_SAFE,
    realm=_SAFE,
    nonce=_SAFE,
    uri=_SAFE,
    resp=st.text("0123456789abcdef", max_size=64),
    algorithm=st.sampled_from(["MD5", "SHA-256", "SHA-256-sess"]),
    with_qop=st.booleans(),
    cnonce=_SAFE,
    nc=st.integers(0, 2**32 - 1),
    extra=_EXTRAS,
)
def test_credentials_round_trip(username, realm, nonce, uri, resp, algorithm, with_qop, cnonce,
                                nc, extra) -> None:  # fmt: skip
    c = Credentials(
        username, realm, nonce, uri, resp, algorithm,
        "auth" if with_qop else None,
        cnonce if with_qop else None,
        f"{nc:08x}" if with_qop else None,
        None,
        extra,
    )  # fmt: skip
    assert parse_credentials(str(c)) == c


@given(st.text(max_size=300))
def test_parser_never_crashes(text: str) -> None:
    for fn in (parse_challenge, parse_credentials):
        try:
            fn(text)
        except DigestError:
            pass


# ---------------------------------------------------------------- client choice


def test_choose_strongest() -> None:
    offered = [
        'Digest realm="r", nonce="n", algorithm=MD5, qop="auth"',
        "garbage",
        'Digest realm="r", nonce="n", algorithm=SHA-512-256, qop="auth"',
        'Digest realm="r", nonce="n", algorithm=SHA-256, qop="auth"',
    ]
    ch = choose_challenge(offered)
    assert ch is not None and ch.algorithm == "SHA-256"
    only_md5 = choose_challenge(offered, ("MD5",))
    assert only_md5 is not None and only_md5.algorithm == "MD5"
    # RFC 2069 (no qop) is MD5 only; auth-int only is not answerable
    assert choose_challenge(['Digest realm="r", nonce="n", algorithm=SHA-256']) is None
    assert choose_challenge(['Digest realm="r", nonce="n", qop="auth-int"']) is None
    old = choose_challenge(['Digest realm="r", nonce="n"'])
    assert old is not None and not old.qop
    creds = answer_challenge(old, username="u", password="p", method="REGISTER", uri="sip:r")
    assert creds.qop is None and creds.nc is None and creds.cnonce is None


# ---------------------------------------------------------------- server

USERS = {"alice": "wonderland", "bob": "builder"}


def _lookup(user: str, algorithm: str) -> str | None:
    pw = USERS.get(user)
    return None if pw is None else ha1(algorithm, user, "vsp.example", pw)


def _server(**kw) -> DigestServer:
    return DigestServer("vsp.example", _lookup, **kw)


def _creds(srv: DigestServer, now: float, *, user="alice", pw=None, alg="SHA-256", nc=1,
           method="REGISTER", stale=False) -> Credentials:  # fmt: skip
    chs = srv.challenges(now, stale=stale)
    assert [c.algorithm for c in chs] == list(srv.algorithms)
    ch = next(c for c in chs if c.algorithm == alg)
    return answer_challenge(ch, username=user, password=pw or USERS.get(user, "x"),
                            method=method, uri="sip:vsp.example", nc=nc)  # fmt: skip


@pytest.mark.parametrize("alg", ["SHA-256", "MD5"])
def test_server_accepts_good_credentials(alg: str) -> None:
    srv = _server()
    creds = _creds(srv, 1000.0, alg=alg)
    res = srv.verify(creds, "REGISTER", 1001.0)
    assert res.ok and res.username == "alice"
    # the nonce is reusable with a higher nonce-count (RFC 7616 §3.4)
    ch = Challenge("vsp.example", creds.nonce, alg)
    again = answer_challenge(ch, username="alice", password="wonderland", method="REGISTER",
                             uri="sip:vsp.example", nc=2)  # fmt: skip
    assert srv.verify(again, "REGISTER", 1002.0).ok


def test_server_refuses() -> None:
    srv = _server()
    now = 5000.0
    assert not srv.verify(_creds(srv, now, pw="wrong"), "REGISTER", now).ok
    assert not srv.verify(_creds(srv, now, user="mallory"), "REGISTER", now).ok
    # wrong method: the digest covers it
    assert not srv.verify(_creds(srv, now, method="INVITE"), "REGISTER", now).ok
    # a nonce we did not issue, or one issued under another secret
    other = _server()
    res = srv.verify(_creds(other, now), "REGISTER", now)
    assert not res.ok and res.reason == "nonce not ours" and not res.stale
    # algorithm not offered
    sha_only = _server(algorithms=("SHA-256",))
    assert not sha_only.verify(_creds(srv, now, alg="MD5"), "REGISTER", now).ok
    with pytest.raises(ValueError):
        _server(algorithms=("SHA-1",))


def test_replay_refused() -> None:
    srv = _server()
    creds = _creds(srv, 100.0)
    assert srv.verify(creds, "REGISTER", 100.0).ok
    res = srv.verify(creds, "REGISTER", 101.0)  # same nonce, same nc
    assert not res.ok and "replay" in res.reason and not res.stale


def test_stale_nonce() -> None:
    srv = _server(nonce_ttl=60.0)
    creds = _creds(srv, 100.0)
    res = srv.verify(creds, "REGISTER", 161.0)
    assert not res.ok and res.stale
    # stale only when the digest was right
    bad = _creds(srv, 100.0, pw="nope")
    assert not srv.verify(bad, "REGISTER", 161.0).stale


def test_rfc2069_single_use_and_switch() -> None:
    srv = _server(algorithms=("MD5",))
    ch = Challenge("vsp.example", srv.new_nonce(10.0), "MD5", ())
    creds = answer_challenge(ch, username="bob", password="builder", method="REGISTER",
                             uri="sip:vsp.example")  # fmt: skip
    assert creds.qop is None
    assert srv.verify(creds, "REGISTER", 10.0).ok
    assert not srv.verify(creds, "REGISTER", 11.0).ok  # no nc: the nonce is spent
    strict = _server(algorithms=("MD5",), allow_rfc2069=False)
    ch2 = Challenge("vsp.example", strict.new_nonce(10.0), "MD5", ())
    c2 = answer_challenge(ch2, username="bob", password="builder", method="REGISTER",
                          uri="sip:vsp.example")  # fmt: skip
    assert not strict.verify(c2, "REGISTER", 10.0).ok


def test_replay_table_is_bounded_and_never_reopens() -> None:
    srv = _server(max_nonces=50)
    first = _creds(srv, 0.0)
    assert srv.verify(first, "REGISTER", 0.0).ok
    for i in range(200):
        now = 1.0 + i * 0.01
        assert srv.verify(_creds(srv, now), "REGISTER", now).ok
    assert len(srv._seen) <= 50
    # the first nonce was evicted: replaying it must not succeed (it is stale now)
    res = srv.verify(first, "REGISTER", 3.0)
    assert not res.ok and res.stale


def test_forged_nonce_shapes() -> None:
    srv = _server()
    good = srv.new_nonce(1.0)
    assert srv.nonce_time(good) == 1.0
    # the last character carries 2 unused bits: a second spelling of a nonce is refused
    last = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".index(good[-1])
    twin = good[:-1] + "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"[last ^ 1]
    assert srv.nonce_time(twin) is None
    for bad in (
        "",
        "x" * 43,
        good[:20] + ("A" if good[20] != "A" else "B") + good[21:],
        good + "=",
        "é" * 43,
    ):
        assert srv.nonce_time(bad) is None
