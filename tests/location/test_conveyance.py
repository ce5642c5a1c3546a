"""ng911.location.conveyance: RFC 6442 header values."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ng911.location.conveyance import (
    BAD_LOCATION_INFORMATION,
    GEOLOCATION_ERROR,
    GeolocationError,
    GeolocationValue,
    cid_of,
    cid_uri,
    format_geolocation,
    format_geolocation_error,
    parse_geolocation,
    parse_geolocation_error,
    parse_geolocation_routing,
    split_outside,
)
from ng911.location.errors import LocationError


@pytest.mark.parametrize(
    "value",
    [
        "<cid:target123@atlanta.example.com>",
        "cid:target123@atlanta.example.com",
        "  <cid:target123@atlanta.example.com>  ",
    ],
)
def test_with_or_without_brackets(value: str) -> None:
    (v,) = parse_geolocation(value)
    assert v.uri == "cid:target123@atlanta.example.com"
    assert v.is_by_value
    assert v.content_id == "target123@atlanta.example.com"
    assert v.scheme == "cid"


def test_multiple_values_and_schemes() -> None:
    values = parse_geolocation(
        "<cid:a@b>, <sips:3sdefrhy2jj7@lis.atlanta.example.com;transport=tls>;inserted-by=ua,"
        ' <https://lis.example.com/loc/1?x=1,2>;foo="a,b;c"  ,sip:loc@lis.example.com'
    )
    assert [v.uri for v in values] == [
        "cid:a@b",
        "sips:3sdefrhy2jj7@lis.atlanta.example.com;transport=tls",
        "https://lis.example.com/loc/1?x=1,2",
        "sip:loc@lis.example.com",
    ]
    assert [v.scheme for v in values] == ["cid", "sips", "https", "sip"]
    assert values[1].param("inserted-by") == "ua"
    assert values[1].param("INSERTED-BY") == "ua"
    assert values[2].param("foo") == '"a,b;c"'
    assert values[3].param("foo") is None
    assert not values[2].is_by_value
    assert values[2].content_id is None


def test_bare_value_params() -> None:
    (v,) = parse_geolocation("cid:x@y;flag;a=1")
    assert v == GeolocationValue("cid:x@y", (("flag", None), ("a", "1")))
    assert v.param("flag") == ""
    assert str(v) == "<cid:x@y>;flag;a=1"


@pytest.mark.parametrize(
    "value",
    [
        "",
        "   ",
        ",",
        "<>",
        "<cid:x",
        "no-scheme-here",
        "<not a uri>",
        "cid:",
        '"unterminated',
        "<cid:a@b> junk",
        "<cid:a@b>;=1",
    ],
)
def test_bad_values(value: str) -> None:
    with pytest.raises(LocationError):
        parse_geolocation(value)


def test_format_and_roundtrip() -> None:
    assert format_geolocation("cid:a@b") == "<cid:a@b>"
    assert (
        format_geolocation("cid:a@b", (("inserted-by", "x"), ("f", None)))
        == "<cid:a@b>;inserted-by=x;f"
    )
    with pytest.raises(LocationError):
        format_geolocation("a@b")
    with pytest.raises(LocationError):
        format_geolocation("cid:a>b")
    values = parse_geolocation("<cid:a@b>;x=1, <https://l/1>")
    assert parse_geolocation(", ".join(str(v) for v in values)) == values


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["cid", "sip", "sips", "http", "https"]),
            st.from_regex(r"[A-Za-z0-9._~@/-]{1,20}", fullmatch=True),
            st.lists(
                st.tuples(
                    st.from_regex(r"[a-z][a-z0-9-]{0,8}", fullmatch=True),
                    st.one_of(st.none(), st.from_regex(r"[A-Za-z0-9.]{1,8}", fullmatch=True)),
                ),
                max_size=3,
            ),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_roundtrip_property(items: list[tuple[str, str, list[tuple[str, str | None]]]]) -> None:
    values = [GeolocationValue(f"{scheme}:{rest}", tuple(params)) for scheme, rest, params in items]
    assert parse_geolocation(", ".join(str(v) for v in values)) == values


def test_cid_of_and_cid_uri() -> None:
    assert cid_of("cid:abc@x") == "abc@x"
    assert cid_of("<cid:abc@x>") == "abc@x"
    assert cid_of("CID:abc%40x") == "abc@x"
    assert cid_of("cid:") is None
    assert cid_of("https://x/y") is None
    assert cid_of("sip:abc@x") is None
    assert cid_uri("<abc@x>") == "cid:abc@x"
    assert cid_uri("a b@x") == "cid:a%20b@x"
    assert cid_of(cid_uri("a b@x")) == "a b@x"
    with pytest.raises(LocationError):
        cid_uri("<>")


def test_geolocation_routing() -> None:
    assert parse_geolocation_routing("yes") is True
    assert parse_geolocation_routing(" No ") is False
    assert parse_geolocation_routing("maybe") is None
    assert parse_geolocation_routing(None) is None


def test_geolocation_error_codes() -> None:
    assert set(GEOLOCATION_ERROR) == {100, 200, 201, 202, 300}
    assert GEOLOCATION_ERROR[100] == "Cannot Process Location"
    assert GEOLOCATION_ERROR[300] == "Dereference Failure"
    assert BAD_LOCATION_INFORMATION == (424, "Bad Location Information")


def test_geolocation_error_parse_format() -> None:
    e = parse_geolocation_error('100 ; code="Cannot Process Location"')
    assert e == GeolocationError(100, "Cannot Process Location")
    assert str(e) == '100 ;code="Cannot Process Location"'
    assert parse_geolocation_error(str(e)) == e
    e = parse_geolocation_error('300;code="say \\"what\\"";x=1')
    assert e.text == 'say "what"'
    assert e.params == (("x", "1"),)
    assert parse_geolocation_error(format_geolocation_error(300, 'say "what"')).text == 'say "what"'
    assert parse_geolocation_error("202").description == GEOLOCATION_ERROR[202]
    assert parse_geolocation_error("999").description == "location error 999"
    assert format_geolocation_error(999) == "999"
    assert format_geolocation_error(200) == '200 ;code="Permission To Use Location Information"'


@pytest.mark.parametrize("value", ["", "abc", "1000", "-1", '100;code="x'])
def test_geolocation_error_garbled(value: str) -> None:
    with pytest.raises(LocationError):
        parse_geolocation_error(value)
    with pytest.raises(LocationError):
        format_geolocation_error(1000)


# --- the split's shortcut (no character walk without quotes) agrees with the walk ----------


@settings(max_examples=2000, deadline=None)
@given(text=st.text(alphabet='<>",;a \\:', max_size=12), sep=st.sampled_from([",", ";"]))
def test_split_shortcut_matches_the_walk(text: str, sep: str) -> None:
    try:
        want = split_outside(text, sep, walk=True)
    except LocationError:
        with pytest.raises(LocationError):
            split_outside(text, sep)
    else:
        assert split_outside(text, sep) == want
