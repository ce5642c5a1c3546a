"""The compiled build reads hostile input exactly as the pure one does.

mypyc checks at run time what the code reads against its declared types, so a value that
lies about its type (lxml's `.tag` of a comment, say) raises `TypeError` in the compiled
build where the pure one just compares it unequal. Each build here reads the same corpus
of mangled input in its own interpreter: SIP messages (parsed, validated, serialised, and
for a request the caller's location taken out of it as the ESRP and a PSAP do), PIDF-LO
documents, LoST `findService` requests (the embedded server's answer) and `Geolocation`
values, every one a seeded mutation of a valid one. The
outcome of each (the value read, or the error's type and text) must be the same in both.
Skipped on a tree that was never compiled (`make compile`).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ng911 import compiled
from ng911.location.civic import CivicAddress
from ng911.location.geodetic import Circle, Point, Polygon
from ng911.location.pidf import build_pidf, simple_pidf
from ng911.lost.protocol import FindServiceRequest, LostLocation, build_request
from ng911.sip import samples
from xml_noise import with_comments_everywhere

SRC = Path(compiled.__file__).resolve().parents[1]
IS_COMPILED = all(compiled.extension_paths(m) for m in (*compiled.MODULES, *compiled.GROUPS))

#: What each build runs on the corpus (a JSON file of [kind, latin-1 text] pairs), printing
#: one outcome per input as JSON.
READER = r"""
import json, sys
from ng911.compiled import build
from ng911.sip.parse import parse_message
from ng911.sip.message import Request
from ng911.elements.routing import extract_location
from ng911.location.pidf import parse_pidf
from ng911.location.conveyance import parse_geolocation
from ng911.lost.embedded import EmbeddedStore
from ng911.lost.server import LostServer
import re
lost = LostServer(EmbeddedStore.from_geojson())

def outcome(kind, data):
    try:
        if kind == "sip":
            msg = parse_message(data.encode("latin-1"))
            steps = [msg.to_bytes().decode("latin-1")]
            try:
                msg.validate()
                steps.append("valid")
            except Exception as exc:
                steps.append(f"{type(exc).__name__}: {exc}")
            if isinstance(msg, Request):
                steps.append(repr(extract_location(msg)))
            return ["ok", steps]
        if kind == "pidf":
            return ["ok", repr(parse_pidf(data.encode("latin-1")))]
        if kind == "lost":  # the answer, without the times in it
            answer = lost.decide(data.encode("latin-1")).decode("utf-8", "replace")
            return ["ok", re.sub(r'(expires|lastUpdated)="[^"]*"', "", answer)]
        return ["ok", repr(parse_geolocation(data))]
    except Exception as exc:
        return ["error", type(exc).__name__, str(exc)]

corpus = json.load(open(sys.argv[1]))
print(json.dumps({"build": build(), "outcomes": [outcome(k, d) for k, d in corpus]}))
"""


def _mutate(rng: random.Random, data: bytes) -> bytes:
    """1-5 byte flips, cuts and repeats (as tests/location/test_pidf.py's property test)."""
    doc = bytearray(data)
    for _ in range(rng.randint(1, 5)):
        if not doc:
            break
        op = rng.choice(("flip", "cut", "dup"))
        i = rng.randrange(len(doc))
        if op == "flip":
            doc[i] = rng.choice((rng.randrange(256), *b'<>:;,\r\n \t"/=@'))
        elif op == "cut":
            del doc[i : rng.randint(i, min(len(doc), i + 40))]
        else:
            doc[i:i] = doc[i : i + rng.randint(1, 40)]
    return bytes(doc)


_TEXTS = (
    "",
    " ",
    "nan",
    "inf",
    "1e999",
    "-91 0",
    "40.7 -73.9",
    "40.7, -73.9",
    "abc",
    "1 2 3",
    "0",
    "-5",
    "360.5",
    "yes",
    "false",
    "urn:ogc:def:uom:EPSG::9001",
    "\u00e9",
)
_ATTRS = (
    ("srsName", "urn:ogc:def:crs:EPSG::4326"),
    ("srsName", "EPSG:4979"),
    ("srsName", "bogus"),
    ("uom", "urn:ogc:def:uom:EPSG::9102"),
    ("uom", "furlong"),
    ("srsDimension", "3"),
    ("srsDimension", "x"),
    ("profile", "civic"),
    ("id", ""),
)


def _mutate_xml(rng: random.Random, data: bytes) -> bytes:
    """1-3 changes that keep the document well formed, so that what reads it past the XML
    parser sees them: an element's text, an attribute, a child dropped, repeated or given
    another element's name, a comment or processing instruction put in."""
    from lxml import etree

    root = etree.fromstring(data)
    for _ in range(rng.randint(1, 3)):
        els = [e for e in root.iter() if isinstance(e.tag, str)]
        el = rng.choice(els)
        op = rng.choice(("text", "attr", "drop", "dup", "rename", "comment"))
        if op == "text":
            el.text = rng.choice(_TEXTS)
        elif op == "attr":
            el.set(*rng.choice(_ATTRS))
        elif op == "drop" and el is not root:
            el.getparent().remove(el)
        elif op == "dup" and el is not root:
            el.addnext(etree.fromstring(etree.tostring(el)))
        elif op == "rename":
            el.tag = rng.choice(els).tag
        else:
            el.insert(rng.randint(0, len(el)), etree.Comment("x"))
    return etree.tostring(root)


def _corpus(seed: int = 911) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    ring = (Point(40.7, -74.0), Point(40.7, -73.9), Point(40.8, -73.9), Point(40.7, -74.0))
    pidfs = [
        build_pidf(simple_pidf("pres:a@b", Circle(Point(40.758, -73.9855), 30.0))),
        build_pidf(simple_pidf("pres:a@b", Polygon(ring), kind="tuple")),
        build_pidf(simple_pidf("pres:a@b", CivicAddress.of(country="US", A1="NY", RD="Main"))),
    ]
    pidfs += [with_comments_everywhere(d) for d in pidfs]
    messages = [samples.emergency_invite(), samples.ringing(), samples.ok_with_sdp()]
    lost = [
        build_request(FindServiceRequest((LostLocation("l", "geodetic-2d", shape),)))
        for shape in (Point(40.78, -73.97), Circle(Point(40.7, -74.0), 50.0), Polygon(ring))
    ] + [
        build_request(
            FindServiceRequest(
                (LostLocation("c", "civic", CivicAddress.of(country="US", A1="NY")),)
            ),
            template=False,
        )
    ]
    geos = [
        "<cid:abc@example.com>",
        '<cid:x@y>;inserted-by="vsp.example"',
        "cid:a%40b, <https://l/x>",
    ]
    out: list[tuple[str, bytes | str]] = []
    for _ in range(400):
        out.append(("sip", _mutate(rng, rng.choice(messages))))
    for _ in range(200):
        out.append(("pidf", _mutate(rng, rng.choice(pidfs))))
        out.append(("pidf", _mutate_xml(rng, rng.choice(pidfs))))
    for _ in range(150):
        out.append(("lost", _mutate(rng, rng.choice(lost))))
        out.append(("lost", _mutate_xml(rng, rng.choice(lost))))
    for _ in range(200):
        out.append(("geo", _mutate(rng, rng.choice(geos).encode()).decode("latin-1")))
    out += [("pidf", d) for d in pidfs] + [("sip", m) for m in messages]
    out += [("lost", r) for r in lost]
    return [(k, d if isinstance(d, str) else d.decode("latin-1")) for k, d in out]


def _read(corpus: Path, *, pure: bool) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k != compiled.PURE_ENV}
    env["PYTHONPATH"] = str(SRC)
    env["PYTHONHASHSEED"] = "0"
    if pure:
        env[compiled.PURE_ENV] = "1"
    out = subprocess.run(
        [sys.executable, "-c", READER, str(corpus)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    result: dict[str, Any] = json.loads(out.stdout)
    return result


@pytest.mark.skipif(not IS_COMPILED, reason="no compiled build (make compile)")
def test_compiled_and_pure_read_mangled_input_alike(tmp_path: Path) -> None:
    corpus = _corpus()
    path = tmp_path / "corpus.json"
    path.write_text(json.dumps(corpus))
    pure = _read(path, pure=True)
    native = _read(path, pure=False)
    assert pure["build"] == "pure" and native["build"] == "compiled"
    differ = [
        (corpus[i][0], corpus[i][1][:120], p, n)
        for i, (p, n) in enumerate(zip(pure["outcomes"], native["outcomes"], strict=True))
        if p != n
    ]
    assert not differ, differ[:3]
    # the corpus reaches both ends: values read, and errors of the expected kinds
    kinds = {o[1] for o in pure["outcomes"] if o[0] == "error"}
    assert sum(o[0] == "ok" for o in pure["outcomes"]) > 200
    assert {"SipParseError", "LocationError", "XmlError"} <= kinds
    assert "TypeError" not in kinds
