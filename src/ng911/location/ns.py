"""XML namespace names used by PIDF-LO, GML and civic addresses.

One place for them so that a typo cannot split the code base into two dialects. The prefixes
in `NSMAP` are the conventional ones from the RFC examples; receivers must not depend on them
(XML namespaces compare by URI), but people reading captures in Wireshark expect them.
"""

from __future__ import annotations

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
