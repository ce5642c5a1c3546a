"""`ng911 lost serve` as a real process: it starts, answers, stops."""

from __future__ import annotations

import subprocess
import sys

import aiohttp
from lost_data import BOROUGH_POINTS

from ng911.cli import build_parser
from ng911.location.geodetic import Point
from ng911.lost.protocol import (
    FindServiceRequest,
    FindServiceResponse,
    LostLocation,
    build_request,
    parse_response,
)


def test_registered() -> None:
    args = build_parser().parse_args(["lost", "serve", "--port", "0", "--uri-scheme", "sips"])
    assert args.func.__name__ == "run_serve" and args.uri_scheme == "sips"


async def test_serve_process_answers() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "ng911.cli", "lost", "serve", "--port", "0", "--uri-scheme", "sips"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "serving http://127.0.0.1:" in line, line + (
            proc.stderr.read() if proc.stderr else ""
        )
        url = line.split("serving ", 1)[1].split()[0]
        lat, lon = BOROUGH_POINTS["bronx"]
        req = FindServiceRequest(locations=(LostLocation("a", "geodetic-2d", Point(lat, lon)),))
        async with aiohttp.ClientSession() as s, s.post(url, data=build_request(req)) as r:
            resp = parse_response(await r.read())
        assert isinstance(resp, FindServiceResponse)
        assert resp.mappings[0].uris == ("sips:psap-bronx@esinet.example",)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
