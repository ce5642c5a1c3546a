"""A two-borough topology for the process and namespace tests: 8 hosts instead of the NYC 14,
so each run starts fewer interpreters (a child process costs ~0.5 s of CPU to import)."""

from pathlib import Path

SMALL = """
[topology]
name = "nyc-small"
boundaries = "nyc-boroughs.geojson"

[hosts.caller]
role = "caller"
domain = "caller.vsp.example"
aor = "sip:+12125550123@vsp.example"

[hosts.vsp]
role = "vsp"
domain = "vsp.example"

[hosts.esrp]
role = "esrp"
domain = "esrp.esinet.nyc.example"

[hosts.lost]
role = "lost"
domain = "ecrf.esinet.nyc.example"

[hosts.psap-manhattan]
role = "psap"
domain = "manhattan.psap.nyc.example"
borough = "Manhattan"

[hosts.psap-brooklyn]
role = "psap"
domain = "brooklyn.psap.nyc.example"
borough = "Brooklyn"

[hosts.taker-manhattan]
role = "calltaker"
psap = "psap-manhattan"
domain = "taker1.manhattan.psap.nyc.example"

[hosts.taker-brooklyn]
role = "calltaker"
psap = "psap-brooklyn"
domain = "taker1.brooklyn.psap.nyc.example"

[[locations]]
name = "Times Square"
lat = 40.7580
lon = -73.9855
borough = "Manhattan"

[[locations]]
name = "Prospect Park"
lat = 40.6602
lon = -73.9690
borough = "Brooklyn"
"""


def small_topology(directory: Path) -> Path:
    path = directory / "nyc-small.toml"
    path.write_text(SMALL)
    return path
