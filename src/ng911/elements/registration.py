"""Answering REGISTER for a proxy that is also a registrar (the VSP, psapd)."""

from __future__ import annotations

import time

from ng911.elements.registrar import Binding, Registrar
from ng911.elements.runtime import ServerCtx, SipElement

__all__ = ["answer_register"]


def answer_register(element: SipElement, registrar: Registrar, ctx: ServerCtx) -> list[Binding]:
    """RFC 3261 §10.3: apply the REGISTER and answer 200 with every current binding."""
    req = ctx.request
    now = time.time()
    bindings = registrar.register(req, ctx.source, now)  # raises ElementError -> its status
    extra = [
        ("Contact", f"<{b.contact}>;expires={max(0, int(b.expires_at - now))}") for b in bindings
    ]
    ctx.reply(200, extra=extra)
    element.log(
        "register",
        aor=str(req.to_addr.uri),
        contacts=[str(b.contact) for b in bindings],
        hop=str(ctx.source.address),
    )
    return bindings
