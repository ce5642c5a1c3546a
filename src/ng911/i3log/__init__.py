"""The NENA i3 Logging Service (NENA-STA-010.3 §4.12): LogEvents, their JWS, store, server.

A layer beside `lost/`: it imports `sip/`, `pki/`, `net/` and `lost/` (the HTTP limits and
`serve` of the LoST server), never `elements/`; elements report through their `EventLog`,
and `ng911.node.logevents` maps those records to LogEvents.
"""
