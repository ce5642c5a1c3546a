"""Location conveyance in SIP (RFC 6442): the Geolocation family of header values.

Strings in, values out; this module never imports the SIP layer. The SIP layer passes us the
Geolocation header's value, we say which URIs it names, and for a `cid:` URI (location by
value) `cid_of` gives the Content-ID whose body part (`application/pidf+xml`) holds the
PIDF-LO (RFC 6442 §4.1, RFC 2392).

Tolerance (NENA i3): a Geolocation value is accepted with or without the `<>` the ABNF
requires. Without brackets the URI ends at the first `;` or `,`, the same rule RFC 3261
§20 applies to addr-spec, so a bare URI with its own parameters cannot be told apart from
header parameters; senders who need that must use brackets, and we always emit them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final
from urllib.parse import quote, unquote

from ng911.location.errors import LocationError

__all__ = [
    "BAD_LOCATION_INFORMATION",
    "GEOLOCATION_ERROR",
    "GeolocationError",
    "GeolocationValue",
    "cid_of",
    "cid_uri",
    "format_geolocation",
    "format_geolocation_error",
    "parse_geolocation",
    "parse_geolocation_error",
    "parse_geolocation_routing",
    "split_outside",
]

#: RFC 6442 §4.4 / §8.6: Geolocation-Error codes and their registered texts.
GEOLOCATION_ERROR: Final[dict[int, str]] = {
    100: "Cannot Process Location",
    200: "Permission To Use Location Information",
    201: "Permission To Retransmit Location Information to a Third Party",
    202: "Permission to Route based on Location Information",
    300: "Dereference Failure",
}

#: RFC 6442 §4.3: the SIP response code for a request rejected because of its location.
BAD_LOCATION_INFORMATION: Final = (424, "Bad Location Information")

_SCHEME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:")
_TOKEN_RE = re.compile(r"^[A-Za-z0-9\-.!%*_+`'~]+$")
_SPACE_RE = re.compile(r"\s")


@dataclass(frozen=True, slots=True)
class GeolocationValue:
    """One `locationValue` (RFC 6442 §4.1): a location URI and its generic parameters.

    `params` keep order; names are lower-cased, a parameter without value has value None.
    """

    uri: str
    params: tuple[tuple[str, str | None], ...] = ()

    @property
    def scheme(self) -> str:
        return self.uri.split(":", 1)[0].lower()

    @property
    def is_by_value(self) -> bool:
        """True for `cid:`: the location is in a body part of this message."""
        return self.scheme == "cid"

    @property
    def content_id(self) -> str | None:
        return cid_of(self.uri)

    def param(self, name: str) -> str | None:
        name = name.lower()
        for k, v in self.params:
            if k == name:
                return "" if v is None else v
        return None

    def __str__(self) -> str:
        return format_geolocation(self.uri, self.params)


def split_outside(text: str, sep: str, *, walk: bool = False) -> list[str]:
    """Split at `sep` where it is outside <...> and "..." (with backslash escapes).
    `walk=True`: always the character walk (the tests' reference for the shortcut)."""
    if '"' not in text and not walk:  # the common `<cid:...>`: no character walk
        # without quotes, whether the text ends inside <...> is whichever comes last
        if text.rfind("<") > text.rfind(">"):
            raise LocationError(f"unbalanced quote or '<' in {text!r}")
        if sep not in text:
            return [text]
        if "<" not in text:
            return text.split(sep)
    out: list[str] = []
    buf: list[str] = []
    in_angle = in_quote = escaped = False
    for ch in text:
        if in_quote:
            buf.append(ch)
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_quote = False
            continue
        if ch == '"' and not in_angle:
            in_quote = True
        elif ch == "<":
            in_angle = True
        elif ch == ">":
            in_angle = False
        elif ch == sep and not in_angle:
            out.append("".join(buf))
            buf = []
            continue
        buf.append(ch)
    if in_quote or in_angle:
        raise LocationError(f"unbalanced quote or '<' in {text!r}")
    out.append("".join(buf))
    return out


def _params(text: str, where: str) -> tuple[tuple[str, str | None], ...]:
    params: list[tuple[str, str | None]] = []
    for raw in split_outside(text, ";"):
        item = raw.strip()
        if not item:
            continue
        name, eq, value = item.partition("=")
        name = name.strip().lower()
        if not _TOKEN_RE.match(name):
            raise LocationError(f"bad parameter {item!r} in {where}")
        params.append((name, value.strip() if eq else None))
    return tuple(params)


def _check_uri(uri: str, where: str) -> str:
    uri = uri.strip()
    if not _SCHEME_RE.match(uri) or len(uri) <= uri.index(":") + 1:
        raise LocationError(f"not a location URI: {uri!r} in {where}")
    if _SPACE_RE.search(uri):  # str.isspace's characters (both are Py_UNICODE_ISSPACE)
        raise LocationError(f"whitespace inside location URI {uri!r}")
    return uri


def parse_geolocation(header_value: str) -> list[GeolocationValue]:
    """Parse a Geolocation header value (comma-separated list; also one per header line).

    `<cid:a@b>`, `cid:a@b`, `<https://lis.example/x>;inserted-by=proxy` are all accepted.
    Raises `LocationError` for an empty value, a value without a URI scheme, or unbalanced
    brackets / quotes.
    """
    if header_value is None or not header_value.strip():
        raise LocationError("empty Geolocation header")
    values: list[GeolocationValue] = []
    for item in split_outside(header_value, ","):
        item = item.strip()
        if not item:
            continue
        if item.startswith("<"):
            end = item.find(">")
            if end < 0:
                raise LocationError(f"Geolocation value lacks '>': {item!r}")
            uri = _check_uri(item[1:end], "Geolocation")
            rest = item[end + 1 :].strip()
            if rest and not rest.startswith(";"):
                raise LocationError(f"junk after Geolocation URI: {rest!r}")
        else:
            uri_text, _, rest = item.partition(";")
            uri = _check_uri(uri_text, "Geolocation")
        values.append(GeolocationValue(uri, _params(rest, "Geolocation")))
    if not values:
        raise LocationError("empty Geolocation header")
    return values


def format_geolocation(uri: str, params: tuple[tuple[str, str | None], ...] | None = None) -> str:
    """`<uri>` plus `;name=value` parameters: the bracketed form RFC 6442 §4.1 requires."""
    _check_uri(uri, "format_geolocation")
    if ">" in uri:
        raise LocationError(f"'>' inside location URI {uri!r}")
    text = f"<{uri}>"
    for name, value in params or ():
        text += f";{name}" if value is None else f";{name}={value}"
    return text


def cid_of(uri: str) -> str | None:
    """The Content-ID named by a `cid:` URL (RFC 2392), else None.

    `cid:abc%40x` and `<cid:abc@x>` both give "abc@x"; the SIP layer compares it with the
    body part's Content-ID without its angle brackets.
    """
    text = uri.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1].strip()
    if text[:4].lower() != "cid:":
        return None
    cid = unquote(text[4:]).strip()
    if cid.startswith("<") and cid.endswith(">"):
        cid = cid[1:-1]
    return cid or None


def cid_uri(content_id: str) -> str:
    """The `cid:` URL for a Content-ID (with or without <>), percent-encoding what RFC 2392
    requires (everything outside the URL-safe set)."""
    cid = content_id.strip()
    if cid.startswith("<") and cid.endswith(">"):
        cid = cid[1:-1]
    if not cid:
        raise LocationError("empty Content-ID")
    return "cid:" + quote(cid, safe="@!$&'()*+,;=:-._~")


def parse_geolocation_routing(value: str | None) -> bool | None:
    """Geolocation-Routing (RFC 6442 §4.2): True for "yes", False for "no", None if absent
    or an extension value we do not know (the caller applies the RFC's default, "no").

    For emergency calls this is informational: the ESRP routes on location regardless
    (RFC 6881, NENA i3).
    """
    if value is None:
        return None
    token = value.strip().lower()
    if token == "yes":
        return True
    if token == "no":
        return False
    return None


@dataclass(frozen=True, slots=True)
class GeolocationError:
    """A Geolocation-Error value (RFC 6442 §4.4): `100 ;code="Cannot Process Location"`."""

    code: int
    text: str | None = None
    params: tuple[tuple[str, str | None], ...] = ()

    @property
    def description(self) -> str:
        """The registered text for the code, else the text sent, else a generic one."""
        return GEOLOCATION_ERROR.get(self.code) or self.text or f"location error {self.code}"

    def __str__(self) -> str:
        return format_geolocation_error(self.code, self.text)


def parse_geolocation_error(value: str) -> GeolocationError:
    """Parse a Geolocation-Error header value; raises `LocationError` if garbled."""
    parts = split_outside(value.strip(), ";")
    code_text = parts[0].strip()
    if not (code_text.isdigit() and 1 <= len(code_text) <= 3):
        raise LocationError(f"Geolocation-Error code must be 1-3 digits, got {code_text!r}")
    params = _params(";".join(parts[1:]), "Geolocation-Error")
    text: str | None = None
    rest: list[tuple[str, str | None]] = []
    for name, val in params:
        if name == "code" and val is not None and text is None:
            text = _unquote(val)
        else:
            rest.append((name, val))
    return GeolocationError(int(code_text), text, tuple(rest))


def format_geolocation_error(code: int, text: str | None = None) -> str:
    """`100 ;code="Cannot Process Location"` (the registered text if none given)."""
    if not 0 <= code <= 999:
        raise LocationError(f"Geolocation-Error code {code} is not 1-3 digits")
    text = text if text is not None else GEOLOCATION_ERROR.get(code)
    if text is None:
        return str(code)
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'{code} ;code="{escaped}"'


def _unquote(value: str) -> str:
    v = value.strip()
    if len(v) >= 2 and v[0] == '"' and v[-1] == '"':
        v = re.sub(r"\\(.)", r"\1", v[1:-1])
    return v
