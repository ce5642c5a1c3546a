"""One SIP request over UDP and its first answer beyond 100 Trying (a plain socket: what
a hostile or minimal peer sends, byte for byte)."""

import socket


def udp_exchange(addr: tuple[str, int], data: bytes, timeout: float = 2.0) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.bind(("127.0.0.1", 0))
        s.sendto(data, addr)
        while True:  # bounded by the socket timeout
            reply, _ = s.recvfrom(65535)
            if not reply.startswith(b"SIP/2.0 100"):
                return reply
