"""The console's few routes on `ng911.net.http1`: method and path to a handler, and the JSON
helpers its API needs.

The console has a dozen endpoints, three of them with a parameter in the path; a table of
exact paths plus `{name}` segments is all it takes (no framework). A path's segments are
split on "/" before they are percent-decoded, so an encoded slash stays inside its segment
and a `..` segment is a segment, never a step up: `/static/../x` matches no route. Bad input
raises `HttpError(status, text)`, answered as plain text; anything else a handler raises
is the server's 500 (logged with its traceback).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final
from urllib.parse import unquote

from ng911.net.http1 import Answer, Request, Response

TEXT: Final = (("Content-Type", "text/plain; charset=utf-8"),)
JSON: Final = (("Content-Type", "application/json; charset=utf-8"),)

Params = Mapping[str, str]
RouteHandler = Callable[[Request, Params], Awaitable[Answer]]


class HttpError(Exception):
    """Raised by a handler: answer `status` with `text` (plain text) instead."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


def text_response(status: int, text: str, headers: tuple[tuple[str, str], ...] = ()) -> Response:
    body = text if text.endswith("\n") else text + "\n"
    return Response(status, body.encode(), (*TEXT, *headers))


def json_response(obj: Any, status: int = 200) -> Response:
    return Response(status, json.dumps(obj).encode(), JSON)


def json_body(request: Request, max_bytes: int) -> dict[str, Any]:
    """The request's body as a JSON object; an empty body is `{}` (an action without
    arguments). 413 beyond `max_bytes`, 415 unless it says `application/json` (or a
    `+json` type), 400 if it is not JSON or not an object."""
    body = request.body
    if not body:
        return {}
    if len(body) > max_bytes:
        raise HttpError(413, f"the body is larger than {max_bytes} bytes")
    ctype = request.content_type
    if ctype != "application/json" and not ctype.endswith("+json"):
        raise HttpError(415, "the body must be JSON (Content-Type: application/json)")
    try:
        obj = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise HttpError(400, "the body must be JSON") from None
    if not isinstance(obj, dict):
        raise HttpError(400, "the body must be a JSON object")
    return obj


def _segments(path: str) -> tuple[str, ...]:
    return tuple(unquote(p) for p in path.strip("/").split("/")) if path.strip("/") else ()


class Routes:
    """The route table, itself an `ng911.net.http1` handler (`serve_http(routes, ...)`)."""

    def __init__(self) -> None:
        self._exact: dict[str, dict[str, RouteHandler]] = {}
        # (pattern segments, "{name}" where a parameter is) -> handler per method
        self._patterns: list[tuple[tuple[str, ...], dict[str, RouteHandler]]] = []

    def add(self, method: str, path: str, handler: RouteHandler) -> None:
        if "{" not in path:
            self._exact.setdefault(path, {})[method] = handler
            return
        pattern = tuple(path.strip("/").split("/"))
        for known, methods in self._patterns:
            if known == pattern:
                methods[method] = handler
                return
        self._patterns.append((pattern, {method: handler}))

    def get(self, path: str, handler: RouteHandler) -> None:
        self.add("GET", path, handler)

    def post(self, path: str, handler: RouteHandler) -> None:
        self.add("POST", path, handler)

    def match(self, path: str) -> tuple[dict[str, RouteHandler], dict[str, str]] | None:
        """The handlers (by method) of the route `path` matches, and its parameters."""
        methods = self._exact.get(path)
        if methods is not None:
            return methods, {}
        segments = _segments(path)
        for pattern, methods in self._patterns:
            if len(pattern) != len(segments):
                continue
            params: dict[str, str] = {}
            for want, got in zip(pattern, segments, strict=True):
                if want.startswith("{") and want.endswith("}"):
                    if not got:
                        break
                    params[want[1:-1]] = got
                elif want != got:
                    break
            else:
                return methods, params
        return None

    def __call__(self, request: Request) -> Answer | Awaitable[Answer]:
        found = self.match(request.path)
        if found is None:
            return text_response(404, f"404 Not Found: no resource {request.path[:200]}")
        methods, params = found
        handler = methods.get(request.method)
        if handler is None:
            allow = ", ".join(sorted(methods))
            return text_response(
                405,
                f"405 Method Not Allowed: {request.method[:20]} (this resource takes {allow})",
                (("Allow", allow),),
            )
        return _run(handler, request, params)


async def _run(handler: RouteHandler, request: Request, params: Params) -> Answer:
    try:
        return await handler(request, params)
    except HttpError as exc:
        return text_response(exc.status, exc.text)
