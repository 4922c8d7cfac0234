"""Tables being served: each one's weights, backend, batcher and row-text cache, by name."""
