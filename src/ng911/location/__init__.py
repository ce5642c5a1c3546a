"""Location: geodetic shapes (RFC 5491), civic addresses (RFC 5139), PIDF-LO, RFC 6442.

Sans-I/O: bytes and values in, bytes and values out. Imports nothing of ng911 but
`ng911.errors`; the SIP layer finds the PIDF-LO body part by the Content-ID that
`conveyance.cid_of` extracts from the Geolocation header.
"""

from ng911.location.civic import CivicAddress, civic_to_element, parse_civic
from ng911.location.conveyance import GeolocationValue, cid_of, parse_geolocation
from ng911.location.errors import LocationError, XmlError
from ng911.location.geodetic import (
    ArcBand,
    Circle,
    Ellipse,
    Ellipsoid,
    Point,
    Polygon,
    Prism,
    Shape,
    Sphere,
    to_shapely,
)
from ng911.location.gml import parse_shape, shape_to_element
from ng911.location.pidf import LocationInfo, PidfLo, build_pidf, parse_pidf
from ng911.location.xml import parse_xml

__all__ = [
    "ArcBand",
    "Circle",
    "CivicAddress",
    "Ellipse",
    "Ellipsoid",
    "GeolocationValue",
    "LocationError",
    "LocationInfo",
    "PidfLo",
    "Point",
    "Polygon",
    "Prism",
    "Shape",
    "Sphere",
    "XmlError",
    "build_pidf",
    "cid_of",
    "civic_to_element",
    "parse_civic",
    "parse_geolocation",
    "parse_pidf",
    "parse_shape",
    "parse_xml",
    "shape_to_element",
    "to_shapely",
]
