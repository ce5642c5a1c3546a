"""A caller for element tests: a UA on a UDP port of its own that sends its calls through
the proxy at 127.0.0.1:`port` and registers nowhere."""

from ng911.elements.config import CallerConfig, ListenerConfig
from ng911.elements.ua import Caller


async def start_caller(port: int) -> Caller:
    caller = Caller(
        CallerConfig(
            listeners=(ListenerConfig("udp"),),
            t1=0.05,
            proxy=f"sip:127.0.0.1:{port}",
            register=False,
        ),
        log_keep=100,
    )
    await caller.start()
    return caller
