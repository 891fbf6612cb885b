"""A real `redis-server` for tests, on a free port, that a test can stop and restart.

`RedisServer` is an *async* context manager running Debian's `redis-server` without
persistence (``--save '' --appendonly no``), its working directory and log in `workdir`::

    async with RedisServer(tmp_path) as server:
        raw = server.client()            # a plain redis.asyncio.Redis, for assertions
        await server.stop()              # fault tests: the server goes away ...
        await server.restart()           # ... and comes back on the same port (empty)

The `redis_server` fixture gives each test its own server. The binary is required, never
optional: a missing `redis-server` fails the test (`.ci/run` installs Debian's package).
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from types import TracebackType

import pytest
import redis.asyncio as redis

from tests.kit.prometheus import free_port

READY_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 5.0


def require_redis_server() -> str:
    """The path of `redis-server`; a missing binary fails the test (never a skip)."""
    path = shutil.which("redis-server")
    if path is None:
        pytest.fail(
            "redis-server is not installed: install Debian's 'redis-server' package "
            "(apt-get install redis-server; .ci/run does)"
        )
    return path


class RedisServer:
    """An async context manager running `redis-server` on 127.0.0.1 (see the module doc).

    `port` may be given (e.g. one a store was configured with before the server existed);
    otherwise a free one is picked. Without a `workdir` a temporary directory is created and
    removed on exit.
    """

    def __init__(self, workdir: Path | None = None, *, port: int | None = None) -> None:
        self._workdir = workdir
        self._owns_workdir = workdir is None
        self._fixed_port = port is not None
        self.port = port or 0
        self._proc: asyncio.subprocess.Process | None = None
        self._clients: list[redis.Redis] = []

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def workdir(self) -> Path:
        assert self._workdir is not None, "RedisServer is not started"
        return self._workdir

    @property
    def log_path(self) -> Path:
        return self.workdir / "redis.log"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def client(self) -> redis.Redis:
        """A raw redis-py client (bytes in, bytes out), closed when the server is closed."""
        client = redis.Redis(host="127.0.0.1", port=self.port, protocol=2)
        self._clients.append(client)
        return client

    async def __aenter__(self) -> RedisServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def start(self) -> None:
        binary = require_redis_server()
        if self._workdir is None:
            self._workdir = Path(tempfile.mkdtemp(prefix="redis-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            for attempt in range(3):
                if not self._fixed_port:
                    self.port = free_port()
                await self._spawn(binary)
                if await self._wait_ready():
                    return
                # The port was taken between free_port() and the bind: try another one.
                busy = "address already in use" in self.log_tail().lower()
                if self._fixed_port or attempt == 2 or not busy:
                    pytest.fail(
                        f"redis-server exited with code {self._returncode()} before it was "
                        f"ready on port {self.port}; log tail:\n{self.log_tail()}"
                    )
        except BaseException:
            await self.stop()
            raise

    async def _spawn(self, binary: str) -> None:
        with self.log_path.open("ab") as log:
            self._proc = await asyncio.create_subprocess_exec(
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
                "--daemonize",
                "no",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )

    def _returncode(self) -> int | None:
        return None if self._proc is None else self._proc.returncode

    async def _wait_ready(self) -> bool:
        """True once PING answers; False if the process exited; fails on timeout."""
        assert self._proc is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READY_TIMEOUT_S
        probe = redis.Redis(host="127.0.0.1", port=self.port, protocol=2, socket_timeout=1.0)
        try:
            while loop.time() < deadline:
                if self._proc.returncode is not None:
                    return False
                try:
                    if await probe.ping():
                        return True
                except (redis.ConnectionError, redis.TimeoutError, OSError):
                    pass
                await asyncio.sleep(0.02)
        finally:
            await probe.aclose()
        pytest.fail(
            f"redis-server not ready on port {self.port} after {READY_TIMEOUT_S:.0f}s;"
            f" log tail:\n{self.log_tail()}"
        )

    async def stop(self) -> None:
        """SIGTERM the server and wait for it to exit (SIGKILL after a bound). Idempotent."""
        proc, self._proc = self._proc, None
        if proc is None or proc.returncode is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            proc.kill()
            await proc.wait()

    async def restart(self) -> None:
        """Stop (if running) and start again on the same port, with an empty dataset."""
        await self.stop()
        binary = require_redis_server()
        await self._spawn(binary)
        if not await self._wait_ready():
            pytest.fail(
                f"redis-server did not restart on port {self.port} (exit code "
                f"{self._returncode()}); log tail:\n{self.log_tail()}"
            )

    async def aclose(self) -> None:
        clients, self._clients = self._clients, []
        for client in clients:
            await client.aclose()
        await self.stop()
        if self._owns_workdir and self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None


async def wait_until(
    predicate: Callable[[], bool | Awaitable[bool]], *, what: str, timeout_s: float = 10.0
) -> None:
    """Poll `predicate` (sync or async) until it holds; fail naming `what` after `timeout_s`.

    For conditions that become true by themselves (an invalidation arriving, a key expiring,
    a reconnect): the deadline only bounds a hang, it is never the thing asserted.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        result = predicate()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if loop.time() >= deadline:
            pytest.fail(f"timed out after {timeout_s:.0f}s waiting for {what}")
        await asyncio.sleep(0.005)


@pytest.fixture
async def redis_server(tmp_path: Path) -> AsyncIterator[RedisServer]:
    """A fresh `redis-server` per test (empty, on a free port)."""
    async with RedisServer(tmp_path / "redis") as server:
        yield server


__all__ = ["RedisServer", "redis_server", "require_redis_server", "wait_until"]
