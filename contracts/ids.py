"""Deterministic trace, span and message ids.

A replay with the same seed must reproduce the same DecisionLog byte for byte, and ids are part
of it, so ids come from a seeded generator owned by the composition root rather than from
`os.urandom`/`uuid4`. Live runs seed it from the OS. The generator is a Mersenne Twister: fast,
reproducible, not cryptographic (ids are correlation keys, not secrets).
"""

from __future__ import annotations

import os
import random


class IdGenerator:
    """Produces W3C-compatible trace ids (128 bit) and span ids (64 bit), never all-zero."""

    __slots__ = ("_random",)

    def __init__(self, seed: int | None) -> None:
        self._random = random.Random(seed if seed is not None else int.from_bytes(os.urandom(8)))

    def trace_id(self) -> str:
        value = 0
        while value == 0:
            value = self._random.getrandbits(128)
        return f"{value:032x}"

    def span_id(self) -> str:
        value = 0
        while value == 0:
            value = self._random.getrandbits(64)
        return f"{value:016x}"

    def message_id(self) -> str:
        """An id for de-duplication (e.g. on Kafka ingress); same shape as a trace id."""
        return self.trace_id()
