"""asyncio bindings of the SIP core: UDP, TCP and TLS transports, connection reuse, RFC 3263."""
