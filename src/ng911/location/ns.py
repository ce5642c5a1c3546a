"""XML namespace names used by PIDF-LO, GML and civic addresses; CRS and unit names.

One place for them so that a typo cannot split the code base into two dialects. The prefixes
in `NSMAP` are the conventional ones from the RFC examples; receivers must not depend on them
(XML namespaces compare by URI), but people reading captures in Wireshark expect them.

`canonical_crs` and `uom_code` are the one reading of a CRS or unit-of-measure name in the
code base (the GML parser, the LoST fast path, the LoST client through the GML parser): the
spellings field equipment sends for the same EPSG entry all come to one value here
(docs/lost-intake.md lists them and why each is accepted).
"""

from __future__ import annotations

import functools
import math
import re
from typing import Final

# RFC 3863 §4.1: the PIDF document namespace (presence, tuple, status, timestamp).
PIDF: Final = "urn:ietf:params:xml:ns:pidf"
# RFC 4479 §3: data model elements (device, person, deviceID, timestamp).
DM: Final = "urn:ietf:params:xml:ns:pidf:data-model"
# RFC 4119 §2.2: the geopriv object (location-info, usage-rules, method, provided-by).
GP: Final = "urn:ietf:params:xml:ns:pidf:geopriv10"
# RFC 4119 §2.2.1 / RFC 6772: basic usage rules (retransmission-allowed, retention-expiry).
GBP: Final = "urn:ietf:params:xml:ns:pidf:geopriv10:basicPolicy"
# RFC 5139 §4: the revised civic address format.
CA: Final = "urn:ietf:params:xml:ns:pidf:geopriv10:civicAddr"
# RFC 4119 §2.2.1: the original civic location format, superseded by RFC 5139 but still sent.
CL_4119: Final = "urn:ietf:params:xml:ns:pidf:geopriv10:civicLoc"
# RFC 6848 §5: civic address extensions (PN, MP, STP, HNP, LMKP, ...).
CAE: Final = "urn:ietf:params:xml:ns:pidf:geopriv10:civicAddr:ext"
# GML 3.1.1 (OGC 03-105r1), profiled by RFC 5491 §5.
GML: Final = "http://www.opengis.net/gml"
# RFC 5491 §5 / OGC 06-142r1: the GeoShape application schema (Circle, Ellipse, ArcBand, ...).
GS: Final = "http://www.opengis.net/pidflo/1.0"
# The XML namespace itself (xml:lang).
XML: Final = "http://www.w3.org/XML/1998/namespace"

# RFC 5491 §5: the only two coordinate reference systems a receiver must understand.
CRS_2D: Final = "urn:ogc:def:crs:EPSG::4326"
CRS_3D: Final = "urn:ogc:def:crs:EPSG::4979"
# RFC 5491 §5: units of measure: metres, degrees, radians.
UOM_METRE: Final = "urn:ogc:def:uom:EPSG::9001"
UOM_DEGREE: Final = "urn:ogc:def:uom:EPSG::9102"
UOM_RADIAN: Final = "urn:ogc:def:uom:EPSG::9101"

# The forms one EPSG entry is named by, the code last: the OGC URN (RFC 5491 §5, OGC 07-092r1
# §7: `urn:ogc:def:crs:EPSG::4326`, with an optional version `EPSG:6.6:4326`), the same URN
# with the doubled colon after `def` seen in the field, the short `EPSG:4326`, the OGC http URI
# (OGC 09-048r5: `http://www.opengis.net/def/crs/EPSG/0/4326`) and GML 2's `epsg.xml#4326`.
_EPSG_FORMS = (
    r"^(?:urn:ogc:def:{1,2}KIND:epsg:[0-9.]*:|epsg:|"
    r"https?://www\.opengis\.net/def/KIND/epsg/[0-9.]+/|"
    r"https?://www\.opengis\.net/gml/srs/epsg\.xml#)([0-9]{1,6})$"
)
_CRS_NAME = re.compile(_EPSG_FORMS.replace("KIND", "crs"), re.IGNORECASE)
_UOM_NAME = re.compile(_EPSG_FORMS.replace("KIND", "uom"), re.IGNORECASE)
_CRS_BY_CODE: Final = {"4326": CRS_2D, "4979": CRS_3D}

#: EPSG length units: code -> (name, metres per unit), from the EPSG dataset's
#: unit_of_measure table (factor_b / factor_c).
LENGTH_UNITS: Final[dict[int, tuple[str, float]]] = {
    9001: ("metre", 1.0),
    9002: ("foot", 0.3048),
    9003: ("US survey foot", 12 / 39.37),
    9014: ("fathom", 1.8288),
    9030: ("nautical mile", 1852.0),
    9033: ("US survey chain", 792 / 39.37),
    9034: ("US survey link", 7.92 / 39.37),
    9035: ("US survey mile", 63360 / 39.37),
    9036: ("kilometre", 1000.0),
    9093: ("statute mile", 1609.344),
    9096: ("yard", 0.9144),
}
#: EPSG angle units that are a ratio of the radian: code -> (name, degrees per unit). The
#: sexagesimal encodings (9107, 9110, 9111, 9115-9121: DDD.MMSS and the like) are not a
#: ratio, so they stay unknown units rather than be read as a wrong number.
ANGLE_UNITS: Final[dict[int, tuple[str, float]]] = {
    9101: ("radian", math.degrees(1.0)),
    9102: ("degree", 1.0),
    9103: ("arc-minute", 1.0 / 60.0),
    9104: ("arc-second", 1.0 / 3600.0),
    9105: ("grad", 0.9),
    9106: ("gon", 0.9),
    9109: ("microradian", math.degrees(1.0) / 1e6),
    9112: ("centesimal minute", 0.9 / 100.0),
    9113: ("centesimal second", 0.9 / 10000.0),
    9114: ("mil_6400", 360.0 / 6400.0),
    9122: ("degree (supplier to define representation)", 1.0),
}


@functools.lru_cache(maxsize=64)
def canonical_crs(name: str) -> str | None:
    """`CRS_2D` or `CRS_3D` for any accepted spelling of EPSG 4326 / 4979, else None.

    Cached (bounded): a server sees the same few spellings over and over.
    """
    m = _CRS_NAME.match(name.strip())
    return _CRS_BY_CODE.get(m.group(1)) if m is not None else None


@functools.lru_cache(maxsize=64)
def uom_code(name: str) -> int | None:
    """The EPSG code a unit-of-measure name spells (any form `canonical_crs` takes), else None."""
    m = _UOM_NAME.match(name.strip())
    return int(m.group(1)) if m is not None else None


NSMAP: Final[dict[str | None, str]] = {
    None: PIDF,
    "dm": DM,
    "gp": GP,
    "gbp": GBP,
    "ca": CA,
    "gml": GML,
    "gs": GS,
}


def q(namespace: str, local: str) -> str:
    """Clark notation `{namespace}local`, the form lxml uses for tags."""
    return f"{{{namespace}}}{local}"
