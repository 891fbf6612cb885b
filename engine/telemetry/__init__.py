"""Logging, tracing and metrics set-up, owned by the composition root."""
