"""Micro-batching of concurrent requests into one backend call per table."""
