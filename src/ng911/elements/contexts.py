"""A transaction and what the element keeps with it: `ServerCtx` (a request we answer) and
`ClientCtx` (a request we sent). Handlers get one; `respond`/`reply` answer through the
element's action loop (`SipElement._run`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from ng911.net.address import Address, Source
from ng911.sip.headers import new_tag
from ng911.sip.message import Request, Response, make_response
from ng911.sip.transaction import ClientTransaction, ServerTransaction

if TYPE_CHECKING:
    from ng911.elements.runtime import SipElement

__all__ = ["ClientCtx", "Ctx", "OnFailure", "OnResponse", "ServerCtx"]


class ServerCtx:
    """A received request and its server transaction: answer it with `respond`/`reply`.

    A plain class with a written `__init__`, not a dataclass: one is made per request, and
    a dataclass's generated `__init__` stays interpreted in the compiled build."""

    __slots__ = (
        "data", "delivered", "element", "final", "request", "size", "source", "timers",
        "to_tag", "tx",
    )  # fmt: skip

    def __init__(
        self, element: SipElement, tx: ServerTransaction, request: Request, source: Source
    ) -> None:
        self.element = element
        self.tx = tx
        self.request = request
        self.source = source
        self.timers: dict[str, int] = {}  # name -> its `TimerHeap` number
        self.final = 0  # status of the final response sent, 0 while none
        self.to_tag: str | None = None
        self.data: dict[str, Any] = {}
        self.delivered = False  # the request went up to the element (once, never again)
        self.size = 0  # characters of the request held (overload control's memory budget)

    @property
    def call_id(self) -> str:
        return self.request.call_id

    def respond(self, response: Response) -> None:
        if response.status >= 200:
            if self.final:
                return  # one final response per transaction (§16.7 step 10, §17.2.1)
            self.final = response.status
            req = self.request
            if req.method == "INVITE" and req.to_addr.tag is None:  # a call, not a re-INVITE
                self.element.count_call(response.status)
        self.element._run(self, self.tx.send_response(response))

    def reply(
        self,
        status: int,
        reason: str | None = None,
        *,
        to_tag: str | None = None,
        extra: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        content_type: str | None = None,
    ) -> Response:
        tag = to_tag if to_tag is not None else (self.to_tag if status > 100 else None)
        if tag is None and status >= 200 and self.request.to_addr.tag is None:
            # RFC 3261 §8.2.6.2: a final response we generate carries our To tag
            tag = self.to_tag = new_tag()
        resp = make_response(self.request, status, reason, to_tag=tag, extra=extra)
        if body:
            resp.headers.add("Content-Type", content_type or "application/sdp")
            resp.body = body
        self.respond(resp)
        return resp


OnResponse = Callable[["ClientCtx", Response], None]
OnFailure = Callable[["ClientCtx", int, str], None]


class ClientCtx:
    """A request we sent and its client transaction; responses go to the callbacks."""

    __slots__ = (
        "data", "dest", "element", "failed", "on_failure", "on_response", "owner", "request",
        "server_name", "timers", "tx",
    )  # fmt: skip

    def __init__(
        self,
        element: SipElement,
        tx: ClientTransaction,
        request: Request,
        dest: Address,
        server_name: str | None,
        on_response: OnResponse | None,
        on_failure: OnFailure | None,
    ) -> None:
        self.element = element
        self.tx = tx
        self.request = request
        self.dest = dest
        self.server_name = server_name
        self.on_response = on_response
        self.on_failure = on_failure
        self.timers: dict[str, int] = {}  # name -> its `TimerHeap` number
        self.data: dict[str, Any] = {}
        self.failed = False
        # what the callbacks act for (the proxy's Branch): lets an element pass callbacks
        # bound once instead of a closure per request; dropped when the transaction ends
        self.owner: Any = None


Ctx = ServerCtx | ClientCtx
