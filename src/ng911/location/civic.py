"""Civic addresses (RFC 5139) with RFC 6848 extension elements.

A civic address is an ordered set of (CAtype name, value) pairs. We keep it that way rather
than as a wide dataclass of 30 optional fields: order and unknown elements survive a
round-trip, RFC 6848 extensions (any namespace other than RFC 5139's) ride along in Clark
notation (`{urn:ietf:params:xml:ns:pidf:geopriv10:civicAddr:ext}PN`), and a LoST server's
validation answer can name exactly the elements it saw (RFC 5222 §8.4.2, RFC 6848 §4).

Values are xs:token in the schema, so whitespace is collapsed on parse. `xml:lang` is kept on
the address and on individual elements (RFC 5139 §4 allows both).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from lxml import etree

from ng911.location.errors import LocationError
from ng911.location.ns import CA, CAE, CL_4119, XML, q
from ng911.location.xml import tag_of

__all__ = ["CA_TYPES", "CivicAddress", "civic_to_element", "is_civic_element", "parse_civic"]

#: RFC 5139 §3.1 / §4 elements, in schema order.
CA_TYPES: tuple[str, ...] = (
    "country",
    "A1",
    "A2",
    "A3",
    "A4",
    "A5",
    "A6",
    "PRM",
    "PRD",
    "RD",
    "STS",
    "POD",
    "POM",
    "RDSEC",
    "RDBR",
    "RDSUBBR",
    "HNO",
    "HNS",
    "LMK",
    "LOC",
    "FLR",
    "NAM",
    "PC",
    "BLD",
    "UNIT",
    "ROOM",
    "SEAT",
    "PLC",
    "PCN",
    "POBOX",
    "ADDCODE",
)
_ORDER = {name: i for i, name in enumerate(CA_TYPES)}
_CIVIC_TAGS = frozenset({q(CA, "civicAddress"), q(CL_4119, "civicAddress")})
_CA_PREFIX = f"{{{CA}}}"
_CL_PREFIX = f"{{{CL_4119}}}"
_LANG = q(XML, "lang")


@dataclass(frozen=True, slots=True)
class CivicAddress:
    """An RFC 5139 civic address.

    `fields` holds (name, value) pairs in document order: RFC 5139 names plain ("country",
    "A1", "RD", ...), extension elements in Clark notation. `lang` is the address' xml:lang;
    `field_langs` maps a field name to its own xml:lang where one was given.
    """

    fields: tuple[tuple[str, str], ...]
    lang: str | None = None
    field_langs: tuple[tuple[str, str], ...] = field(default=())

    def __post_init__(self) -> None:
        if not isinstance(self.fields, tuple):
            object.__setattr__(self, "fields", tuple(self.fields))
        for item in self.fields:
            if (
                not isinstance(item, tuple)
                or len(item) != 2
                or not isinstance(item[0], str)
                or not isinstance(item[1], str)
                or not item[0]
            ):
                raise LocationError(f"civic field must be a (name, value) pair of str: {item!r}")

    @classmethod
    def of(
        cls,
        mapping: Mapping[str, str] | None = None,
        *,
        lang: str | None = None,
        **kw: str,
    ) -> CivicAddress:
        """Build from a mapping / keywords, RFC 5139 elements sorted into schema order.

        `CivicAddress.of(country="US", A1="NY", A3="New York", RD="Broadway", HNO="1500")`
        """
        items = dict(mapping or {})
        items.update(kw)
        known = sorted((k for k in items if k in _ORDER), key=_ORDER.__getitem__)
        other = [k for k in items if k not in _ORDER]
        return cls(tuple((k, items[k]) for k in (*known, *other)), lang=lang)

    def get(self, name: str, default: str | None = None) -> str | None:
        """First value of element `name` ("RD", or "{ns}PN" for an extension), else default."""
        for k, v in self.fields:
            if k == name:
                return v
        return default

    def __contains__(self, name: object) -> bool:
        return any(k == name for k, _ in self.fields)

    def as_dict(self) -> dict[str, str]:
        """Mapping of the fields (the first value wins when a name repeats)."""
        out: dict[str, str] = {}
        for k, v in self.fields:
            out.setdefault(k, v)
        return out

    def names(self) -> tuple[str, ...]:
        return tuple(k for k, _ in self.fields)

    @property
    def country(self) -> str | None:
        return self.get("country")

    def extension(self, local: str, namespace: str = CAE) -> str | None:
        """An RFC 6848 extension element's value, e.g. `extension("PN")` for a pole number."""
        return self.get(q(namespace, local))

    def one_line(self) -> str:
        """A human-readable rendering for logs and the call-taker console (not a standard)."""
        d = self.as_dict()
        street = " ".join(
            v for v in (d.get("HNO"), d.get("HNS"), d.get("PRD"), d.get("RD"), d.get("STS")) if v
        )
        parts = [street, d.get("LOC"), d.get("A3"), d.get("A1"), d.get("PC"), d.get("country")]
        return ", ".join(p for p in parts if p)


_XS_SPACE = re.compile(r"[ \t\n\r]+")


def _collapse(text: str | None) -> str:
    # xs:token whitespace collapse: only XML's four space characters, not NBSP & co.
    return _XS_SPACE.sub(" ", text).strip(" ") if text else ""


def is_civic_element(el: etree._Element) -> bool:
    """True for an RFC 5139 `ca:civicAddress` (or the RFC 4119 `cl:civicAddress`)."""
    return tag_of(el) in _CIVIC_TAGS


def parse_civic(el: etree._Element) -> CivicAddress:
    """Parse a civicAddress element; raises `LocationError` if it is not one.

    The RFC 4119 civicLoc namespace is accepted too (older devices still send it); its
    elements map onto the same names.
    """
    if tag_of(el) not in _CIVIC_TAGS:
        raise LocationError(f"not a civicAddress element: {tag_of(el)!r}")
    fields: list[tuple[str, str]] = []
    langs: list[tuple[str, str]] = []
    for child in el:
        tag = tag_of(child)
        if not tag:
            continue  # comment or processing instruction
        if tag.startswith(_CA_PREFIX):
            name = tag[len(_CA_PREFIX) :]
        elif tag.startswith(_CL_PREFIX):
            name = tag[len(_CL_PREFIX) :]
        else:
            name = tag  # RFC 6848 extension: keep its namespace (text content only)
        fields.append((name, _collapse(child.text)))
        lang = child.get(_LANG)
        if lang is not None:
            langs.append((name, lang))
    return CivicAddress(tuple(fields), el.get(_LANG), tuple(langs))


def civic_to_element(civic: CivicAddress, parent: etree._Element | None = None) -> etree._Element:
    """The `ca:civicAddress` element for `civic` (RFC 5139 namespace).

    With `parent`, it is appended there and reuses the parent's namespace declarations.
    """
    tag = q(CA, "civicAddress")
    if parent is None:
        nsmap: dict[str, str] = {"ca": CA}
        if any(k.startswith("{") for k, _ in civic.fields):
            nsmap["cae"] = CAE
        el = etree.Element(tag, nsmap=nsmap)
    elif any(k.startswith(f"{{{CAE}}}") for k, _ in civic.fields):
        # Declare the RFC 6848 prefix here rather than let lxml invent "ns0".
        el = etree.SubElement(parent, tag, nsmap={"cae": CAE})
    else:
        el = etree.SubElement(parent, tag)
    if civic.lang is not None:
        el.set(_LANG, civic.lang)
    langs = dict(civic.field_langs)
    for name, value in civic.fields:
        try:
            child = etree.SubElement(el, name if name.startswith("{") else f"{_CA_PREFIX}{name}")
        except ValueError:
            raise LocationError(f"civic field name {name!r} is not a valid XML name") from None
        child.text = value
        lang = langs.get(name)
        if lang is not None:
            child.set(_LANG, lang)
    return el


def civic_from_pairs(pairs: Iterable[tuple[str, str]], lang: str | None = None) -> CivicAddress:
    """Build from (name, value) pairs, keeping their order."""
    return CivicAddress(tuple(pairs), lang)
