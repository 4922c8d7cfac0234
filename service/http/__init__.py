"""HTTP layer: the FastAPI app (routes, schemas, docs) behind a lean ASGI hot path."""
