"""Observation: per-hop message traces, pcaps with TLS key logs, the dashboard."""
