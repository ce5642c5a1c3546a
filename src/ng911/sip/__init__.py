"""Sans-I/O SIP core: URIs, messages, parsing, transactions and dialogs.

Nothing in this package touches a socket, a clock or an event loop: it takes bytes and
events and returns bytes, events and timers to set (the h11 model).
"""
