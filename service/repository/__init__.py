"""Model repository: finds table files, reads their options, loads their weights."""
