"""ng911.location.civic: RFC 5139 civic addresses with RFC 6848 extensions."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from location_strategies import civics
from lxml import etree

from ng911.location.civic import (
    CA_TYPES,
    CivicAddress,
    civic_from_pairs,
    civic_to_element,
    is_civic_element,
    parse_civic,
)
from ng911.location.errors import LocationError
from ng911.location.ns import CAE
from ng911.location.xml import parse_xml

CA = "urn:ietf:params:xml:ns:pidf:geopriv10:civicAddr"

RFC5139_EXAMPLE = f"""<civicAddress xml:lang="en-AU" xmlns="{CA}">
  <country>AU</country>
  <A1>NSW</A1>
  <A3>     Wollongong
  </A3>
  <A4>North Wollongong</A4>
  <RD>Flinders</RD>
  <STS>Street</STS>
  <RDBR>Campbell Street</RDBR>
  <LMK>Gilligan's Island</LMK>
  <LOC>Corner</LOC>
  <NAM> Video Rental Store </NAM>
  <PC>2500</PC>
  <ROOM> Westerns and Classics </ROOM>
  <PLC>store</PLC>
  <POBOX>Private Box 15</POBOX>
</civicAddress>"""


def _roundtrip(c: CivicAddress) -> CivicAddress:
    return parse_civic(parse_xml(etree.tostring(civic_to_element(c))))


def test_parse_rfc5139_example() -> None:
    c = parse_civic(parse_xml(RFC5139_EXAMPLE.encode()))
    assert c.lang == "en-AU"
    assert c.country == "AU"
    assert c.get("A3") == "Wollongong"  # xs:token: whitespace collapsed
    assert c.get("NAM") == "Video Rental Store"
    assert c.get("ROOM") == "Westerns and Classics"
    assert c.get("HNO") is None
    assert c.get("HNO", "-") == "-"
    assert "RDBR" in c
    assert c.names()[:3] == ("country", "A1", "A3")
    assert _roundtrip(c) == c


def test_extension_elements_kept() -> None:
    doc = (
        f'<civicAddress xmlns="{CA}" xmlns:cae="{CAE}" xmlns:x="urn:example:other">'
        "<country>US</country><A1>CA</A1><RD>Colorado</RD><HNO>223</HNO>"
        "<cae:STP>Avenue</cae:STP><cae:PN>A1-17</cae:PN><x:thing>opaque</x:thing>"
        "<!-- a comment --></civicAddress>"
    )
    c = parse_civic(parse_xml(doc.encode()))
    assert c.extension("STP") == "Avenue"
    assert c.extension("PN") == "A1-17"
    assert c.extension("thing", "urn:example:other") == "opaque"
    back = _roundtrip(c)
    assert back == c
    text = etree.tostring(civic_to_element(c)).decode()
    assert 'xmlns:cae="urn:ietf:params:xml:ns:pidf:geopriv10:civicAddr:ext"' in text


def test_extension_under_parent_gets_cae_prefix() -> None:
    parent = etree.Element("p")
    c = CivicAddress.of(country="US", **{f"{{{CAE}}}PN": "7"})
    civic_to_element(c, parent)
    assert "cae:PN" in etree.tostring(parent).decode()


def test_field_level_lang_kept() -> None:
    doc = (
        f'<civicAddress xmlns="{CA}" xml:lang="en">'
        '<country>CA</country><A1 xml:lang="fr">Québec</A1></civicAddress>'
    )
    c = parse_civic(parse_xml(doc.encode()))
    assert c.field_langs == (("A1", "fr"),)
    assert _roundtrip(c) == c


def test_rfc4119_civicloc_accepted() -> None:
    doc = (
        '<cl:civicAddress xmlns:cl="urn:ietf:params:xml:ns:pidf:geopriv10:civicLoc">'
        "<cl:country>US</cl:country><cl:A1>NY</cl:A1></cl:civicAddress>"
    )
    c = parse_civic(parse_xml(doc.encode()))
    assert c.as_dict() == {"country": "US", "A1": "NY"}
    # always re-emitted in the RFC 5139 namespace
    assert civic_to_element(c).tag == f"{{{CA}}}civicAddress"


def test_of_sorts_schema_order() -> None:
    c = CivicAddress.of({"HNO": "1500", "country": "US"}, RD="Broadway", A1="NY", A3="New York")
    assert c.names() == ("country", "A1", "A3", "RD", "HNO")
    assert c.one_line() == "1500 Broadway, New York, NY, US"


def test_all_rfc5139_types_roundtrip() -> None:
    c = CivicAddress.of({name: f"v-{name}" for name in CA_TYPES}, lang="en-US")
    assert _roundtrip(c) == c
    assert len(c.fields) == 31


def test_repeated_and_empty_elements_kept() -> None:
    c = civic_from_pairs([("country", "US"), ("LOC", "a"), ("LOC", "b"), ("FLR", "")])
    assert c.get("LOC") == "a"
    assert c.as_dict()["LOC"] == "a"
    assert _roundtrip(c) == c


def test_not_a_civic_element() -> None:
    el = parse_xml(b"<civicAddress xmlns='urn:wrong'/>")
    assert not is_civic_element(el)
    with pytest.raises(LocationError, match="not a civicAddress"):
        parse_civic(el)


def test_bad_fields_rejected() -> None:
    with pytest.raises(LocationError):
        CivicAddress((("country",),))  # type: ignore[arg-type]
    with pytest.raises(LocationError):
        CivicAddress((("", "x"),))
    with pytest.raises(LocationError, match="XML name"):
        civic_to_element(CivicAddress((("bad name", "x"),)))


def test_fields_list_frozen_to_tuple() -> None:
    c = CivicAddress([("country", "US")])  # type: ignore[arg-type]
    assert c.fields == (("country", "US"),)
    assert hash(c) == hash(CivicAddress((("country", "US"),)))


@settings(max_examples=200, deadline=None)
@given(civics())
def test_roundtrip_property(c: CivicAddress) -> None:
    assert _roundtrip(c) == c
