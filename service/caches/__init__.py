"""Bounded in-process caches of table rows: the row-text cache (JSON text of rows, for the
encoders) and the hot-row cache (rows read from Redis, for that backend).

A leaf layer: the caches know numpy, orjson and the metrics, nothing of backends, tables or
HTTP, so both the backends below the use cases and the encoding above them can hold one.
"""
