"""Data sources: replayed history (and, later, live feeds)."""
