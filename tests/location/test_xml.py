"""ng911.location.xml: hostile and malformed XML is rejected with XmlError, fast."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ng911.errors import Ng911Error
from ng911.location.errors import LocationError, XmlError
from ng911.location.xml import parse_xml, to_bytes

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="pres:x@y">&lol9;</presence>"""

XXE = b"""<?xml version="1.0"?>
<!DOCTYPE foo [ <!ENTITY xxe SYSTEM "file:///etc/passwd"> ]>
<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="pres:x@y">&xxe;</presence>"""

XXE_PARAMETER = b"""<?xml version="1.0"?>
<!DOCTYPE foo [ <!ENTITY % ext SYSTEM "http://127.0.0.1:1/evil.dtd"> %ext; ]>
<foo/>"""

EXTERNAL_DTD = b"""<?xml version="1.0"?>
<!DOCTYPE presence SYSTEM "file:///etc/passwd">
<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="pres:x@y"/>"""


def test_plain_document_parses() -> None:
    root = parse_xml(b"<a xmlns='urn:x'><b>text</b></a>")
    assert root.tag == "{urn:x}a"
    assert root[0].text == "text"


def test_accepts_str_bytearray_memoryview() -> None:
    for data in ("<a/>", bytearray(b"<a/>"), memoryview(b"<a/>")):
        assert parse_xml(data).tag == "a"


def test_xml_error_is_location_error_is_ng911_error() -> None:
    assert issubclass(XmlError, LocationError)
    assert issubclass(LocationError, Ng911Error)
    assert XmlError.lost_error == "badRequest"
    assert LocationError.sip_status == 424


@pytest.mark.parametrize(
    "doc", [BILLION_LAUGHS, XXE, XXE_PARAMETER, EXTERNAL_DTD], ids=["laughs", "xxe", "pe", "dtd"]
)
def test_doctype_and_entities_rejected(doc: bytes) -> None:
    with pytest.raises(XmlError, match="DOCTYPE"):
        parse_xml(doc)


def test_doctype_in_utf16_rejected() -> None:
    doc = XXE.decode().replace('version="1.0"', 'version="1.0" encoding="UTF-16"')
    with pytest.raises(XmlError, match="DOCTYPE"):
        parse_xml(doc.encode("utf-16"))
    # and without a byte-order mark
    with pytest.raises(XmlError, match="DOCTYPE"):
        parse_xml(doc.encode("utf-16-le"))


def test_utf16_without_doctype_parses() -> None:
    doc = '<?xml version="1.0" encoding="UTF-16"?><a>é</a>'
    assert parse_xml(doc.encode("utf-16")).text == "é"


def test_undeclared_entity_rejected() -> None:
    with pytest.raises(XmlError, match="malformed"):
        parse_xml(b"<a>&xxe;</a>")


def test_predefined_entities_and_char_refs_still_work() -> None:
    assert parse_xml(b"<a>&lt;&amp;&#65;</a>").text == "<&A"


def test_ten_megabyte_document_rejected() -> None:
    big = b"<a>" + b"x" * (10 * 1024 * 1024) + b"</a>"
    with pytest.raises(XmlError, match="too large"):
        parse_xml(big)


def test_size_limit_is_configurable() -> None:
    doc = b"<a>" + b"x" * 2000 + b"</a>"
    with pytest.raises(XmlError, match="too large"):
        parse_xml(doc, max_size=1000)
    assert parse_xml(doc, max_size=5000).tag == "a"


def test_ten_thousand_deep_nesting_rejected() -> None:
    deep = b"<a>" * 10_000 + b"</a>" * 10_000
    with pytest.raises(XmlError, match="nested too deeply"):
        parse_xml(deep)


def test_depth_limit_enforced_below_libxml2_limit() -> None:
    doc = b"<a>" * 100 + b"</a>" * 100
    with pytest.raises(XmlError, match="nested too deeply"):
        parse_xml(doc)
    assert parse_xml(doc, max_depth=100).tag == "a"
    with pytest.raises(XmlError, match="nested too deeply"):
        parse_xml(b"<a><b><c/></b></a>", max_depth=2)


@pytest.mark.parametrize(
    "garbage",
    [
        b"",
        b"   \r\n",
        b"hello world",
        b"\x00\xff\xfe\x00garbage",
        b"<a>",
        b"<a></b>",
        b"<a><b></a>",
        b'{"json": true}',
        b"INVITE sip:bob@example.com SIP/2.0\r\n\r\n",
        b"<?xml version='1.0' encoding='no-such-encoding'?><a/>",
        b"<a/><b/>",
    ],
)
def test_garbage_rejected(garbage: bytes) -> None:
    with pytest.raises(XmlError):
        parse_xml(garbage)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=512))
def test_random_bytes_never_crash(data: bytes) -> None:
    try:
        parse_xml(data)
    except XmlError:
        pass


def test_to_bytes_has_declaration() -> None:
    out = to_bytes(parse_xml(b"<a>\xc3\xa9</a>"))
    assert out.startswith(b"<?xml")
    assert parse_xml(out).text == "é"


# --- the depth walk is skipped only where it cannot find anything (location/xml.py) ---------


@pytest.mark.parametrize("depth", [2, 3, 10, 64, 65])
def test_depth_bound_holds_at_every_limit(depth: int) -> None:
    """Exactly `max_depth` levels pass, one more fails, whichever side of the start-tag
    count the shortcut takes (the walk runs or is skipped)."""
    doc = b"<a>" * depth + b"</a>" * depth
    assert parse_xml(doc, max_depth=depth).tag == "a"
    with pytest.raises(XmlError, match="nested too deeply"):
        parse_xml(doc, max_depth=depth - 1)
    # self-closing innermost element, siblings, comments and a declaration change nothing
    doc2 = b'<?xml version="1.0"?><!-- x --><a>' + b"<a>" * (depth - 2) + b"<b/><c/>"
    doc2 += b"</a>" * (depth - 1)
    assert parse_xml(doc2, max_depth=depth).tag == "a"
    with pytest.raises(XmlError, match="nested too deeply"):
        parse_xml(doc2, max_depth=depth - 1)


@pytest.mark.parametrize(
    "codec,name", [("utf-16", "UTF-16"), ("utf-16-le", "UTF-16LE"), ("utf-32", "UTF-32"),
                   ("latin-1", "ISO-8859-1")],
)  # fmt: skip
def test_depth_enforced_in_other_encodings(codec: str, name: str) -> None:
    """In an encoding whose bytes are not ASCII's (or a declared non-UTF-8 one), the byte
    count says nothing: the walk runs."""
    text = f'<?xml version="1.0" encoding="{name}"?>' + "<a>" * 5 + "</a>" * 5
    data = text.encode(codec)
    with pytest.raises(XmlError, match="nested too deeply"):
        parse_xml(data, max_depth=4)
    assert parse_xml(data, max_depth=5).tag == "a"


def test_depth_enforced_when_the_bytes_hide_the_tags() -> None:
    """UTF-7 spells "<" as "+ADw-": eleven levels in three "<" bytes. The start-tag count
    would wave it through; the declared encoding sends it to the walk, which refuses it."""
    data = b'<?xml version="1.0" encoding="UTF-7"?><a>' + b"+ADw-a>" * 10
    data += b"+ADw-/a>" * 10 + b"</a>"
    assert data.count(b"<") <= 5
    with pytest.raises(XmlError, match="nested too deeply"):
        parse_xml(data, max_depth=5)
