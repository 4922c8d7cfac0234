"""Embedding-lookup inference service: trained embedding tables served by id over HTTP."""

__version__ = "0.1.0"
