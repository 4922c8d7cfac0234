"""The layers' semantics applied to gathered rows: torch max_norm, Keras/torch sequence masks."""
