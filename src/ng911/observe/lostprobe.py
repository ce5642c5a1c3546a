"""A LoST client that reports each findService it makes, for the trace and the ladder.

The ESRP takes its `LostClient` as a constructor argument, so the testbed hands it this
subclass: same behaviour, plus one `LostQueryEvent` per `find_service` call (sent time,
duration, outcome, whether the answer came from the cache). The HTTP exchange itself is not
a SIP message, so `ng911.net` never sees it; this is where it becomes visible.

`use_cache=False` makes every call ask the server (the testbed's default, so each call pays
the LoST round trip and HTTP vs HTTPS shows in every call's delay, not only the first one
per borough); `True` keeps RFC 5222 §5.4 caching by `expires`, as a deployed ESRP would.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ng911.lost.client import FindServiceResult, LostClient
from ng911.observe.wire import LostQueryEvent


class ObservedLostClient(LostClient):
    """`LostClient` + observers receiving a `LostQueryEvent` per findService."""

    def __init__(
        self,
        url: str,
        *,
        element: str = "esrp",
        server: str = "lost",
        use_cache: bool = False,
        observers: list[Callable[[Any], None]] | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(url, **kw)
        self.element = element
        self.server = server
        self.use_cache = use_cache
        self.observers: list[Callable[[Any], None]] = observers if observers is not None else []

    async def find_service(
        self,
        location: Any,
        service: str = "urn:service:sos",
        *,
        call_id: str | None = None,
        incident_id: str | None = None,
        location_id: str = "loc1",
        use_cache: bool | None = None,
    ) -> FindServiceResult:
        ts, mono = time.time(), time.perf_counter()
        queries = self.queries
        ok, result = False, None
        try:
            res = await super().find_service(
                location,
                service,
                call_id=call_id,
                incident_id=incident_id,
                location_id=location_id,
                use_cache=self.use_cache if use_cache is None else use_cache,
            )
            ok, result = True, res.sip_uri or (res.uris[0] if res.uris else None)
            return res
        except Exception as exc:
            result = getattr(exc, "kind", None) or type(exc).__name__
            raise
        finally:
            duration = time.perf_counter() - mono
            ev = LostQueryEvent(
                ts=ts,
                mono=mono,
                duration=duration,
                element=self.element,
                url=self.url,
                transport="https" if self.url.startswith("https:") else "http",
                ok=ok,
                call_id=call_id,  # the NENA emergency-CallId URN the ESRP passes
                result=result,
                server=self.server,
                cached=self.queries == queries,
            )
            for obs in list(self.observers):
                try:
                    obs(ev)
                except Exception:  # an observer must never break a call
                    pass
