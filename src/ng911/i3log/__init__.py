"""The NENA i3 Logging Service (NENA-STA-010.3 §4.12): LogEvents, their JWS, store, server.

A layer beside `lost/`: it imports `sip/`, `pki/` and `net/` (its HTTP server is
`ng911.net.http1`, as the LoST server's), never `elements/`; elements report through their
`EventLog`, and `ng911.node.logevents` maps those records to LogEvents.
"""
