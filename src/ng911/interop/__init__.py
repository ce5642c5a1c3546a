"""A harness for third-party peers: Kamailio 5.6 and SIPp beside ng911's elements.

What `tests/interop/` and the benches (`bench/load.py`, `bench/resilience.py`) share, so
that both drive the same peers the same way:

- `procs`: free loopback ports, per-process CPU time and memory from /proc, and stopping a
  child process (or its whole process group) that is always dead afterwards;
- `kamailio`: Kamailio configurations (a stateful record-routing proxy, an emergency VSP over
  mutual TLS, a proxy with flood limits) and a `kamailio -DD` process in its own group;
- `sipp`: SIPp command lines and runs, its scenarios (package data under `sipp/`), and its
  `-trace_stat` CSV.

Layer: the testbed's. It may import any package below; nothing in `sip/`, `net/` or
`elements/` imports it.
"""
