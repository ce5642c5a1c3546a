"""The testbed: topology, scenarios, launcher, measurement and report."""
