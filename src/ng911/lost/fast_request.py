"""The common findService, read without building an lxml tree: the LoST server's hot path.

Nearly every query an ECRF answers has one shape: a `<findService>` with one geodetic-2d
`gml:Point` (or `gs:Circle`; each also in the other namespace), a service URN, perhaps a
`<path>` and NENA i3's `<emergencyCallIncidentId>`. Building an lxml tree for it, and a
Python proxy per element, costs several times more than the lookup itself. `parse_fast`
matches that shape with one compiled regular expression over the whole document (children
in the order clients send them), then checks names, namespaces and values in Python: about
half the full path's cost.

It is an accelerator, never a second parser with its own opinions: it accepts only a strict
subset of well-formed XML (ASCII, no `&` at all so no entity or character reference, no `<!`
so no DOCTYPE, comment or CDATA, no processing instruction but the XML declaration, no
carriage return, no tab or newline inside attribute values, no prefixed attribute but
namespace declarations, no namespace name but the five a findService uses, no reserved
prefix, no duplicate attribute, one root, matching end tags, whitespace-only text between
elements) and only the elements and attributes it fully understands. For anything else
(`<!DOCTYPE`, an unknown child, a civic location, a 3D point, a coordinate out of range, ...)
it returns None and `parse_request_fast` takes the full, hardened path (`parse_request` on
`ng911.location.xml.parse_xml`), which gives the answer or the error. When it does answer,
the value is exactly what the full path gives (a differential test over the request corpus,
hypothesis-generated requests and byte-level mutations asserts equality), and it uses the
full path's own checks for what it validates (`check_service`, `check_range`, `bool_value`)
so the two cannot drift apart. Not a cache of answers: every request is matched in full, and
its coordinates, radius and i3 ids are read and checked every time; only what its markup says
(namespaces, names, the service, the path: the same in every query one client sends) is read
once per distinct markup text (`_Form`), which halves the fast path's cost.
"""

from __future__ import annotations

import math
import re
from typing import Final

from ng911.location.errors import LocationError
from ng911.location.geodetic import Circle, Point, Shape
from ng911.location.gml import length_in_metres
from ng911.location.ns import CA, CRS_2D, GML, GS, canonical_crs
from ng911.lost.errors import LostProtocolError
from ng911.lost.protocol import (
    MAX_PATH,
    NS_IDS,
    NS_LOST,
    PROFILE_GEODETIC,
    FindServiceRequest,
    LostLocation,
    LostRequest,
    bool_value,
    check_range,
    check_service,
    parse_request,
)

# Namespace names a declaration may bind here. libxml2 checks a namespace name is a valid
# URI (a stray space fails the document); rather than repeat its rules, only the names of
# the formats a findService carries are read here, anything else goes to the full path.
_KNOWN_NS: Final = frozenset({NS_LOST, NS_IDS, GML, GS, CA})

#: Larger documents go to the full parser: the fast path is for the < 2 KB common query.
FAST_MAX: Final = 8192

# A name with any colons: `_tag` and `_attrs` refuse all but "prefix:local" (fewer
# alternatives for the regex engine to try than a pattern with an optional prefix).
_QNAME = r"[A-Za-z_][A-Za-z0-9_.:-]*"
_S = r"[ \t\n]*"
_EQ = _S + r"=" + _S
# An attribute value: no "<" (not well-formed), no tab or newline (XML normalises those to
# spaces, XML 1.0 §3.3.3; rather than do the same, leave such documents to lxml).
_ATTRS = r"(?:[ \t\n]+" + _QNAME + _EQ + r"(?:\"[^\"<\t\n]*\"|'[^'<\t\n]*'))*"
# XML 1.0 §2.8: version 1.0, encoding (if any) UTF-8, nothing else (standalone -> full path).
_PROLOG = (
    r"<\?xml[ \t\n]+version" + _EQ + r"(?:\"1\.0\"|'1\.0')"
    r"(?:[ \t\n]+encoding" + _EQ + r"(?:\"[Uu][Tt][Ff]-8\"|'[Uu][Tt][Ff]-8'))?" + _S + r"\?>"
)


def _start(name: str, attrs: str | None = None) -> str:
    a = r"(?P<" + attrs + r">" + _ATTRS + r")" if attrs else ""
    return r"<(?P<" + name + r">" + _QNAME + r")" + a + _S + r">" + _S


def _end(name: str) -> str:
    return r"</(?P=" + name + r")" + _S + r">" + _S


# The whole common document, children in the order clients send them (ours, and the NENA
# i3 examples): location (one Point or Circle), service, optional path, optional i3 ids.
# End tags must repeat their start tag exactly (the backreferences).
_DOC = re.compile(
    r"(?:"
    + _PROLOG
    + r")?"
    + _S
    + _start("root", "rattrs")
    + _start("loc", "lattrs")
    + _start("shape", "sattrs")
    + r"<(?P<pos>"
    + _QNAME
    + r")"
    + _S
    + r">(?P<ptext>[^<]*)"
    + _end("pos")
    + r"(?:<(?P<rad>"
    + _QNAME
    + r")(?P<radattrs>"
    + _ATTRS
    + r")"
    + _S
    + r">(?P<radtext>[^<]*)"
    + _end("rad")
    + r")?"
    + _end("shape")
    + _end("loc")
    + r"<(?P<svc>"
    + _QNAME
    + r")"
    + _S
    + r">(?P<stext>[^<]*)"
    + _end("svc")
    + r"(?:"
    + _start("path")
    + r"(?P<vias>(?:<"
    + _QNAME
    + _ATTRS
    + _S
    + r"/>"
    + _S
    + r")*)"
    + _end("path")
    + r")?"
    + r"(?:<(?P<ids>"
    + _QNAME
    + r")(?P<iattrs>"
    + _ATTRS
    + r")"
    + _S
    + r"/>"
    + _S
    + r")?"
    + _end("root")
)
_NCNAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")  # XML Namespaces §3, ASCII only
_ATTR = re.compile(r"([A-Za-z_][A-Za-z0-9_.:-]*)[ \t\n]*=[ \t\n]*(?:\"([^\"]*)\"|'([^']*)')")
_VIA = re.compile(r"<(" + _QNAME + r")(" + _ATTRS + r")" + _S + r"/>")
# Bytes the subset allows: printable ASCII but "&" (so no entity or character reference),
# tab and newline. Deleting them leaves nothing from a document in the subset.
_ALLOWED = bytes([9, 10, *range(0x20, 0x26), *range(0x27, 0x7F)])

_ROOT_ATTRS = frozenset({"recursive", "serviceBoundary", "validateLocation"})
_LOCATION_ATTRS = frozenset({"id", "profile"})
_SHAPE_ATTRS = frozenset({"srsName"})
_RADIUS_ATTRS = frozenset({"uom"})
_IDS_ATTRS = frozenset({"callId", "incidentTrackingId"})
_VIA_ATTRS = frozenset({"source"})


_T_FIND = (NS_LOST, "findService")
_T_LOCATION = (NS_LOST, "location")
_T_SERVICE = (NS_LOST, "service")
_T_PATH = (NS_LOST, "path")
_T_VIA = (NS_LOST, "via")
_T_IDS = (NS_IDS, "emergencyCallIncidentId")
# Each in the namespace RFC 5491 §5 gives it or the other one, as `ng911.location.gml` reads.
_T_POINT = frozenset({(GML, "Point"), (GS, "Point")})
_T_POS = frozenset({(GML, "pos"), (GS, "pos")})
_T_CIRCLE = frozenset({(GS, "Circle"), (GML, "Circle")})
_T_RADIUS = frozenset({(GS, "radius"), (GML, "radius")})


class _Unsure(Exception):
    """Not the common shape (or not certainly well-formed): let the full parser decide."""


def _attrs(
    text: str | None, allowed: frozenset[str], ns: dict[str, str] | None = None
) -> dict[str, str]:
    """Unprefixed attributes (only `allowed` ones); namespace declarations only with `ns`.

    `text` already matched the attribute syntax (`_ATTRS`), so with double quotes only it
    splits at the quotes: `name="value"` pairs, cheaper than a second regex pass.
    """
    if not text:
        return {}
    pairs: list[tuple[str, str]]
    if "'" in text:
        pairs = [(n, v1 or v2) for n, v1, v2 in _ATTR.findall(text)]
    else:
        parts = text.split('"')
        pairs = [
            (n.strip()[:-1].rstrip(), v) for n, v in zip(parts[:-1:2], parts[1::2], strict=True)
        ]
    out = dict(pairs)
    if len(out) != len(pairs):  # a duplicate attribute (or namespace declaration)
        raise _Unsure
    if out.keys() <= allowed:
        return out
    declared: dict[str, str] = {}
    for name, value in pairs:
        if name in allowed:
            continue
        if (name != "xmlns" and name[:6] != "xmlns:") or ns is None:
            raise _Unsure  # unknown, prefixed (xml:lang, gml:id), or a declaration misplaced
        prefix = name[6:]
        if (
            (name != "xmlns" and _NCNAME.fullmatch(prefix) is None)  # "xmlns:" is no prefix
            or prefix[:3].lower() == "xml"
            or value not in _KNOWN_NS
        ):
            raise _Unsure
        declared[prefix] = value
        del out[name]
    if ns is not None:
        ns.update(declared)
    return out


def _tag(raw: str, ns: dict[str, str]) -> tuple[str, str]:
    prefix, _, local = raw.rpartition(":")
    uri = ns.get(prefix)
    if not uri or _NCNAME.fullmatch(local) is None:  # unbound, no default ns, or a bad name
        raise _Unsure
    return uri, local


def _numbers(text: str) -> list[float]:
    """`ng911.location.gml._numbers` without its error messages (an error is `_Unsure`)."""
    values = [float(tok) for tok in text.replace(",", " ").split()]
    for v in values:
        if not math.isfinite(v):
            raise _Unsure
    return values


class _Form:
    """What a document's markup says, apart from its coordinates and i3 ids.

    Clients send the same markup around different numbers (one client, one serialiser), so
    it is read once per distinct markup (`_FORMS`) and the values read per request are only
    the coordinates, the radius and the `<emergencyCallIncidentId>` attributes. A pure
    function of the markup's text: the document is still matched in full (`_DOC`), and what
    varies is still checked per request by the full path's own checks.
    """

    __slots__ = (
        "circle", "ids_ns", "ids_tag", "loc_id", "path", "recursive", "service",
        "service_boundary", "uom", "validate",
    )  # fmt: skip

    def __init__(self, g: tuple[str | None, ...]) -> None:
        """Read the markup groups of `_DOC` (`_Unsure`, `ValueError`, `LocationError` or
        `LostProtocolError` when it is not the common shape)."""
        (
            root_tag, root_attrs, loc_tag, loc_attrs, shape_tag, shape_attrs, pos_tag,
            rad_tag, rad_attrs, svc_tag, svc_text, path_tag, vias_text, ids_tag,
        ) = g  # fmt: skip
        if None in (root_tag, loc_tag, shape_tag, pos_tag, svc_tag, svc_text):
            raise _Unsure  # not in a document `_DOC` matched (for the type checker)
        assert root_tag and loc_tag and shape_tag and pos_tag and svc_tag and svc_text is not None
        ns: dict[str, str] = {}
        root = _attrs(root_attrs, _ROOT_ATTRS, ns)
        if _tag(root_tag, ns) != _T_FIND or _tag(loc_tag, ns) != _T_LOCATION:
            raise _Unsure
        loc = _attrs(loc_attrs, _LOCATION_ATTRS)
        self.loc_id = loc.get("id", "").strip()
        if not self.loc_id or loc.get("profile", "").strip() != PROFILE_GEODETIC:
            raise _Unsure
        srs = _attrs(shape_attrs, _SHAPE_ATTRS).get("srsName")
        if srs is not None and canonical_crs(srs) != CRS_2D:  # the one CRS reading (ns.py)
            raise _Unsure
        if _tag(pos_tag, ns) not in _T_POS:
            raise _Unsure
        tag = _tag(shape_tag, ns)
        self.uom: str | None = None
        if tag in _T_POINT and rad_tag is None:
            self.circle = False
        elif tag in _T_CIRCLE and rad_tag is not None and _tag(rad_tag, ns) in _T_RADIUS:
            self.circle = True
            self.uom = _attrs(rad_attrs, _RADIUS_ATTRS).get("uom")
        else:
            raise _Unsure
        if _tag(svc_tag, ns) != _T_SERVICE:
            raise _Unsure
        self.service = check_service(svc_text.strip())
        path: tuple[str, ...] = ()
        if path_tag is not None:
            if _tag(path_tag, ns) != _T_PATH:
                raise _Unsure
            vias = []
            for raw, attr_text in _VIA.findall(vias_text or ""):
                source = _attrs(attr_text, _VIA_ATTRS).get("source")
                if _tag(raw, ns) != _T_VIA or not source:
                    raise _Unsure
                vias.append(source.strip())
            if len(vias) > MAX_PATH:
                raise _Unsure
            path = tuple(vias)
        self.path = path
        # the i3 ids element's own declarations are read per request (its attributes vary)
        self.ids_ns = ns if ids_tag is not None else None
        self.ids_tag = ids_tag
        sb = root.get("serviceBoundary")
        if sb is not None:
            sb = sb.strip()
            if sb not in ("value", "reference"):
                raise _Unsure
        self.service_boundary = sb
        self.recursive = bool_value(root.get("recursive"), "recursive", False)
        self.validate = bool_value(root.get("validateLocation"), "validateLocation", False)


#: Markups read (`_Form`), by their text; emptied when full, so a client varying its markup
#: on purpose costs itself the reading and never grows memory.
_FORMS: dict[tuple[str | None, ...], _Form] = {}
_MAX_FORMS: Final = 64
# `_DOC`'s groups that vary per request: the coordinates, the radius, the ids' attributes.
_G_POS, _G_RAD, _G_IDS = 7, 10, 16


def _form(g: tuple[str | None, ...]) -> _Form | None:
    key = (*g[:_G_POS], *g[_G_POS + 1 : _G_RAD], *g[_G_RAD + 1 : _G_IDS])
    form = _FORMS.get(key)
    if form is None:
        try:
            form = _Form(key)
        except (_Unsure, ValueError, LocationError, LostProtocolError):
            return None
        if len(_FORMS) >= _MAX_FORMS:
            _FORMS.clear()
        _FORMS[key] = form
    return form


def _ids(form: _Form, ids_attrs: str | None) -> tuple[str | None, str | None]:
    """`<emergencyCallIncidentId callId incidentTrackingId>` (NENA i3), `_Unsure` if odd."""
    assert form.ids_ns is not None and form.ids_tag is not None
    ids_ns = dict(form.ids_ns)
    ids = _attrs(ids_attrs, _IDS_ATTRS, ids_ns)
    if _tag(form.ids_tag, ids_ns) != _T_IDS:
        raise _Unsure
    call_id = ids.get("callId")
    incident_id = ids.get("incidentTrackingId")
    if len(call_id or "") > 256 or len(incident_id or "") > 256:
        raise _Unsure
    return call_id, incident_id


class _Template:
    """The bytes of a document the fast path read, around the texts that vary per request.

    `head` is everything before the coordinates; each slot is (whether the text is the ids'
    attributes, the bytes that follow it up to the next text or the end). A document that
    is exactly `head`, a text, the slot's bytes, ... differs from the one read only where
    `_DOC` has a text group (`[^<]*`, or `_ATTRS` for the ids), so `_DOC` would match it
    with the same markup groups: its `_Form` applies, and only its texts are checked and
    read. Anything else (a byte of markup changed) goes the `_DOC` way.
    """

    __slots__ = ("form", "head", "slots", "tail")

    def __init__(self, data: bytes, m: re.Match[str], form: _Form) -> None:
        spans = [(False, m.span("ptext"))]
        if form.circle:
            spans.append((False, m.span("radtext")))
        if form.ids_tag is not None:
            spans.append((True, m.span("iattrs")))
        self.form = form
        self.head = data[: spans[0][1][0]]
        ends = [span[1] for _, span in spans]
        starts = [span[0] for _, span in spans[1:]] + [len(data)]
        self.slots = tuple(
            (ids, data[end:start]) for (ids, _), end, start in zip(spans, ends, starts, strict=True)
        )
        # one text, the coordinates (a point without i3 ids): all after it is this tail
        self.tail = self.slots[0][1] if len(self.slots) == 1 else None

    def texts(self, data: bytes) -> list[str] | None:
        """The varying texts of `data` if it fits this template (checked as `parse_fast`
        checks a whole document: allowed bytes only, no "]]>"), else None."""
        if not data.startswith(self.head):
            return None
        pos = len(self.head)
        tail = self.tail
        if tail is not None:  # the common case, in fewer calls
            end = len(data) - len(tail)
            if end < pos or not data.endswith(tail):
                return None
            try:
                number = data[pos:end].decode("ascii")
            except UnicodeDecodeError:
                return None
            # Printable ASCII is all the allowed bytes but "&", and no control byte; what
            # is no number ("&", "<", "]]>"...) is refused by the reader of the numbers
            # (`float`), as on the full path. A tab or newline: the checks below.
            if number.isprintable():
                return [number]
        out = []
        for ids, after in self.slots:
            if ids:
                am = _ATTRS_B.match(data, pos)
                end = am.end() if am is not None else pos
                if not data.startswith(after, end):
                    return None
                text = data[pos:end]
                if text.translate(None, _ALLOWED) or b"]]>" in text:
                    return None
            else:  # bytes a number may hold: all allowed, never "]]>" (`_NUMBER_TEXT`)
                nm = _NUMBER_TEXT.match(data, pos)
                end = nm.end() if nm is not None else pos
                if not data.startswith(after, end):
                    return None
                text = data[pos:end]
            out.append(text.decode("ascii"))
            pos = end + len(after)
        return out if pos == len(data) else None


#: The templates of the last documents read, most recent first (one client: one template).
_TEMPLATES: list[_Template] = []
_MAX_TEMPLATES: Final = 4
_ATTRS_B = re.compile(_ATTRS.encode("ascii"))
# What a coordinate or radius text may hold on a template: digits, sign, point, exponent and
# the separators `_numbers` reads. Anything else ("nan", "1_0", a byte XML refuses) and the
# template does not fit: `_DOC` and the checks of a whole document decide.
_NUMBER_TEXT = re.compile(rb"[0-9.,+\-eE \t\n]*")


def _read(data: bytes) -> tuple[_Form, list[str | None], re.Match[str] | None] | None:
    """The form and varying texts (coordinates, radius, ids' attributes) of `data`, by a
    template or by `_DOC`; the match when `_DOC` read it."""
    for tpl in _TEMPLATES:
        texts = tpl.texts(data)
        if texts is not None:
            known = tpl.form
            rad_text = texts[1] if known.circle else None
            ids_attrs = texts[-1] if known.ids_tag is not None else None
            return known, [texts[0], rad_text, ids_attrs], None
    if data.translate(None, _ALLOWED) or b"]]>" in data:
        return None
    m = _DOC.fullmatch(data.decode("ascii"))  # ASCII: the translate above left nothing
    if m is None:
        return None
    g = m.groups()
    form = _form(g)
    if form is None:
        return None
    return form, [g[_G_POS], g[_G_RAD], g[_G_IDS]], m


def _remember(data: bytes, m: re.Match[str] | None, form: _Form) -> None:
    if m is not None:  # read by `_DOC`: the next document like it takes the template
        _TEMPLATES.insert(0, _Template(data, m, form))
        del _TEMPLATES[_MAX_TEMPLATES:]


def read_point(data: bytes) -> tuple[_Form, float, float] | None:
    """The markup and (lat, lon) of a common findService for a point, checked exactly as
    `parse_fast` checks them (so `parse_fast` gives a request for it, with these values);
    None for a circle or anything else. The LoST server's hot path (`LostEngine.answer_point`),
    which builds no request object."""
    if len(data) > FAST_MAX:
        return None
    read = _read(data)
    if read is None:
        return None
    form, (pos_text, _, ids_attrs), m = read
    if form.circle:
        return None
    text = pos_text or ""
    # `_numbers` for two numbers, without its list and its finiteness loop: what is not
    # finite fails the range check, as `Point` and `check_range` refuse it
    parts = (text.replace(",", " ") if "," in text else text).split()
    if len(parts) != 2:
        return None
    try:
        lat = float(parts[0])
        lon = float(parts[1])
        if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
            return None
        if form.ids_tag is not None:
            _ids(form, ids_attrs)
    except (_Unsure, ValueError):
        return None
    _remember(data, m, form)
    return form, lat, lon


def parse_fast(data: bytes) -> FindServiceRequest | None:
    """The `FindServiceRequest` in `data` if it has the common shape, else None."""
    if len(data) > FAST_MAX:
        return None
    read = _read(data)
    if read is None:
        return None
    form, (pos_text, rad_text, ids_attrs), m = read
    try:
        values = _numbers(pos_text or "")
        if len(values) != 2:  # 3 numbers: a 3D point (full path); anything else: an error
            return None
        center = Point(values[0], values[1])
        shape: Shape = center
        if form.circle:
            radius = _numbers(rad_text or "")
            if len(radius) != 1:
                return None
            # the full path's own conversion (an unknown unit: LocationError -> the full path)
            shape = Circle(center, length_in_metres(radius[0], form.uom))
        check_range(shape)
        call_id = incident_id = None
        if form.ids_tag is not None:
            call_id, incident_id = _ids(form, ids_attrs)
        req = FindServiceRequest(
            (LostLocation(form.loc_id, PROFILE_GEODETIC, shape),),
            form.service,
            form.recursive,
            form.service_boundary,
            form.validate,
            form.path,
            call_id,
            incident_id,
        )
    except (_Unsure, ValueError, LocationError, LostProtocolError):
        return None
    _remember(data, m, form)
    return req


def parse_request_fast(data: bytes) -> LostRequest:
    """`parse_request`, with the common findService read by `parse_fast` (same result)."""
    return parse_fast(data) or parse_request(data)
