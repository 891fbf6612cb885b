"""Stubs shared by the engine's tests (agents that misbehave on purpose, etc.)."""
