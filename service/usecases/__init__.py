"""Use cases: decoded requests and the table registry in, result objects out (no HTTP here)."""
