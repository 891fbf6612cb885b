"""The shape of every async resource of the engine: explicit start/stop, and `async with`.

Explicit methods (rather than only a context manager) let the composition root start components
in dependency order and stop them in reverse; the context manager makes tests and scripts
exception-safe without repeating the same two dunder methods in every class.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import TracebackType
from typing import Self


class AsyncService(ABC):
    """Base of components that acquire resources in `start` and release them in `stop`."""

    @abstractmethod
    async def start(self) -> None:
        """Acquire resources and begin work. Constructors must not do I/O; this does."""

    @abstractmethod
    async def stop(self) -> None:
        """Finish in-flight work and release resources. Safe to call after a failed start."""

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
