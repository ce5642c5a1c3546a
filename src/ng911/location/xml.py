"""Hardened XML parsing for location objects and LoST messages.

Every PIDF-LO in an INVITE and every LoST request comes from outside our trust boundary, and
XML is a classic attack surface: internal entities expand exponentially ("billion laughs"),
external entities read local files or reach the network (XXE), and deep nesting or huge
documents exhaust memory and stack. None of the formats we read (RFC 4119, 5139, 5222, 5491)
needs a DTD, so the policy is simple: any DOCTYPE is rejected outright, before lxml sees it
where possible, and the parser is configured so that even if one slipped through nothing
would be loaded or expanded.

Why lxml at all: it is the fastest conforming XML parser for Python and exposes every libxml2
safety switch. The parser object is per thread (lxml parsers must not be shared between
threads) and created once, so the hot path (the ESRP parses a PIDF-LO per call, the LoST
server a location per query) costs one `fromstring` plus a short depth walk.
"""

from __future__ import annotations

import codecs
import threading
from typing import Any, cast

from lxml import etree

from ng911.location.errors import XmlError

DEFAULT_MAX_SIZE = 1_000_000
DEFAULT_MAX_DEPTH = 64

_local = threading.local()

# Byte-order marks of the encodings whose bytes do not contain ASCII "<!DOCTYPE" literally.
_WIDE_BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


# Encodings (as lxml reports them) in which the byte "<" is the character "<" and nothing else.
_BYTE_SAFE = frozenset({"UTF-8", "utf-8", "ASCII", "US-ASCII", "us-ascii", "ascii"})


def tag_of(el: etree._Element) -> str:
    """The element's tag in Clark notation, or "" for a comment, processing instruction or
    entity, whose `.tag` is lxml's factory function, not a string. The stubs say `str`, and
    the compiled build checks what it reads against them, so a bare `.tag` on a comment
    inside a hostile document would raise TypeError there instead of just not matching."""
    tag = cast(Any, el).tag
    return tag if isinstance(tag, str) else ""


def _parser() -> etree.XMLParser:
    parser: etree.XMLParser | None = getattr(_local, "parser", None)
    if parser is None:
        parser = etree.XMLParser(
            resolve_entities=False,  # never substitute entity references
            no_network=True,  # never fetch anything
            dtd_validation=False,
            load_dtd=False,  # never read an external DTD subset
            huge_tree=False,  # keep libxml2's own depth/size limits
            remove_blank_text=False,
            collect_ids=False,  # no ID hash table: we never look elements up by xml:id
            recover=False,  # a broken document is an error, not a guess
        )
        _local.parser = parser
    return parser


def _wide_text(data: bytes) -> str | None:
    """Decode UTF-16/32 input so the DOCTYPE scan also sees it; None for byte encodings."""
    for bom, codec in _WIDE_BOMS:
        if data.startswith(bom):
            return data.decode(codec, errors="replace")
    # No BOM but NUL bytes among the first four: UTF-16/32 without BOM (XML 1.0 Appendix F).
    head = data[:4]
    if b"\x00" in head:
        for codec in ("utf-32-le", "utf-32-be", "utf-16-le", "utf-16-be"):
            try:
                text = data.decode(codec)
            except UnicodeDecodeError:
                continue
            if text.lstrip().startswith("<"):
                return text
        return data.decode("latin-1")
    return None


def parse_xml(
    data: bytes | bytearray | memoryview | str,
    *,
    max_size: int = DEFAULT_MAX_SIZE,
    max_depth: int = DEFAULT_MAX_DEPTH,
) -> etree._Element:
    """Parse untrusted XML and return its root element, or raise `XmlError`.

    Rejected: empty input, more than `max_size` bytes, any DOCTYPE (and so any entity
    declaration), undeclared entity references, elements nested deeper than `max_depth`
    (the root is depth 1), and anything that is not well-formed XML.
    """
    if isinstance(data, str):
        raw = data.encode("utf-8")
    elif isinstance(data, bytes):
        raw = data
    else:
        raw = bytes(data)
    if not raw.strip():
        raise XmlError("empty XML document")
    if len(raw) > max_size:
        raise XmlError(f"XML document too large: {len(raw)} bytes (limit {max_size})")
    # Reject DTDs before parsing: cheap (C-speed substring scan) and gives a clear message.
    # A DOCTYPE can only appear in the prolog, but scanning everything also catches one that
    # a broken document places later.
    if b"<!DOCTYPE" in raw or b"<!ENTITY" in raw:
        raise XmlError("XML document has a DOCTYPE or entity declaration (not allowed)")
    wide = _wide_text(raw)
    if wide is not None and ("<!DOCTYPE" in wide or "<!ENTITY" in wide):
        raise XmlError("XML document has a DOCTYPE or entity declaration (not allowed)")
    try:
        root = etree.fromstring(raw, _parser())
    except etree.XMLSyntaxError as exc:
        message = _syntax_message(exc)
        if "Excessive depth" in message:
            raise XmlError(f"XML nested too deeply: more than {max_depth} levels") from None
        raise XmlError(f"malformed XML: {message}") from None
    except (ValueError, TypeError) as exc:  # e.g. unsupported encoding declaration
        raise XmlError(f"malformed XML: {exc}") from None
    # Belt and braces: should a DTD have slipped past the scan (an exotic encoding), refuse.
    info = root.getroottree().docinfo
    if info.internalDTD is not None:
        raise XmlError("XML document has a DOCTYPE (not allowed)")
    # Depth: no element nests deeper than there are elements, and each has a start tag, a
    # "<" not followed by "/"; in UTF-8 (or ASCII) the byte "<" is only ever that character,
    # so a document with at most `max_depth` such bytes cannot be too deep and needs no walk
    # (comments, CDATA, processing instructions also hold "<": a looser bound, never an
    # unsafe one). Any other encoding (UTF-16/32, UTF-7, EBCDIC...) is walked.
    if (
        wide is not None
        or info.encoding not in _BYTE_SAFE
        or raw.count(b"<") - raw.count(b"</") > max_depth
    ):
        _check_depth(root, max_depth)
    return root


def _syntax_message(exc: etree.XMLSyntaxError) -> str:
    # lxml's message already names line and column.
    return str(exc).strip() or "syntax error"


def _check_depth(root: etree._Element, max_depth: int) -> None:
    """Iterative walk (no recursion, so no Python stack risk) bounding the nesting depth.

    libxml2 already refuses documents deeper than 256 levels when huge_tree is off, so the
    tree we walk is small; this enforces our tighter limit with a message that says so.
    """
    stack: list[tuple[etree._Element, int]] = [(root, 1)]
    while stack:
        el, depth = stack.pop()
        if depth > max_depth:
            raise XmlError(f"XML nested too deeply: more than {max_depth} levels")
        nxt = depth + 1
        for child in el:
            stack.append((child, nxt))


def to_bytes(el: etree._Element, *, declaration: bool = True) -> bytes:
    """Serialise an element as UTF-8 (with an XML declaration by default)."""
    return etree.tostring(el, encoding="UTF-8", xml_declaration=declaration)
