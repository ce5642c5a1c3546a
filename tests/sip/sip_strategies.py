"""Hypothesis strategies for SIP values, shared by the sip tests."""

from __future__ import annotations

import string

from hypothesis import strategies as st

from ng911.sip.uri import URN, NameAddr, SipURI, TelURI

_LOWER_TOKEN = string.ascii_lowercase + string.digits + "-"
_PARAMCHAR = string.ascii_letters + string.digits + "-_.!~*'()[]/:&+$"
_HNV = string.ascii_letters + string.digits + "-_.!~*'()[]/?:+$"

# Any text a person might put in a user part or display name (no surrogates, no controls).
free_text = st.text(
    st.characters(blacklist_categories=("Cs", "Cc")),
    min_size=1,
    max_size=20,
)

label = st.text(string.ascii_lowercase + string.digits, min_size=1, max_size=10)
hostname = st.lists(label, min_size=1, max_size=4).map(".".join)
ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(lambda a: f"[{a}]")
host = st.one_of(hostname, ipv4, ipv6)
port = st.one_of(st.none(), st.integers(0, 65535))

param_name = st.text(_LOWER_TOKEN, min_size=1, max_size=10)
param_value = st.one_of(st.none(), st.text(_PARAMCHAR, min_size=1, max_size=12))
params = st.lists(st.tuples(param_name, param_value), max_size=4).map(tuple)
uri_headers = st.lists(
    st.tuples(
        st.text(string.ascii_letters + "-", min_size=1, max_size=8),
        st.text(_HNV, max_size=12),
    ),
    max_size=3,
).map(tuple)


@st.composite
def sip_uris(draw: st.DrawFn) -> SipURI:
    user = draw(st.one_of(st.none(), free_text))
    password = draw(st.one_of(st.none(), free_text)) if user is not None else None
    return SipURI(
        scheme=draw(st.sampled_from(["sip", "sips"])),
        user=user,
        password=password,
        host=draw(host),
        port=draw(port),
        params=draw(params),
        headers=draw(uri_headers),
    )


tel_uris = st.builds(
    TelURI,
    number=st.text("0123456789-.()", min_size=1, max_size=15)
    .filter(lambda s: any(c.isdigit() for c in s))
    .map(lambda s: "+" + s),
    params=params,
)

urns = st.builds(
    URN,
    nid=st.sampled_from(["service", "uuid", "emergency"]),
    nss=st.text(string.ascii_letters + string.digits + ".:-", min_size=1, max_size=20),
)

any_uri = st.one_of(sip_uris(), tel_uris, urns)

token = st.text(string.ascii_letters + string.digits + "-.!%*_+`'~", min_size=1, max_size=10)
quoted = st.text(string.ascii_letters + string.digits + " <>,;=", max_size=10).map(
    lambda s: f'"{s}"'
)
header_params = st.lists(
    st.tuples(param_name, st.one_of(st.none(), token, quoted)), max_size=3
).map(tuple)

name_addrs = st.builds(
    NameAddr,
    uri=any_uri,
    display=st.one_of(st.none(), st.text(st.characters(blacklist_categories=("Cs", "Cc")))),
    params=header_params,
)
