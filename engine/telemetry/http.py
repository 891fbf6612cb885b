"""/metrics, /healthz and /readyz, served by aiohttp inside the engine's own event loop.

Why in-loop rather than prometheus_client's `start_http_server` thread: the health endpoints
need JSON and read `HealthRegistry`, which is single-loop and lock-free; serving from the loop
keeps every read consistent with the engine's state without locks. The cost is that a scrape
runs collectors on the loop, so they must stay cheap (they are: counters and gauges updated by
the engine itself). A collector that raises answers 500 for that scrape only; it never takes
the server, or the engine, down.

`AppRunner` + `TCPSite` rather than `web.run_app`: `run_app` owns the loop and signal handling,
and the engine's composition root owns both. aiohttp's access log is disabled: probes hit these
endpoints every few seconds, and the engine's logs go through structlog.
"""

from __future__ import annotations

import os
import socket

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from engine.lifecycle import AsyncService
from engine.telemetry.health import HealthRegistry
from engine.telemetry.logging import Logger

# In-flight scrapes get this long to finish on stop; a scraper must not hold engine shutdown
# for aiohttp's default of a minute.
_SHUTDOWN_TIMEOUT_S = 5.0


class TelemetryServerError(Exception):
    """The telemetry HTTP server could not start (the message is one line, fit for an operator)."""


def _bind_failure(exc: OSError) -> str:
    # asyncio wraps bind errors as "error while attempting to bind on address (...): <strerror>";
    # the operator-facing message already names host:port, so keep only the cause.
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve host: {exc.strerror or exc}"
    if exc.errno is not None and exc.errno > 0:
        return os.strerror(exc.errno).lower()
    return str(exc) or type(exc).__name__


class TelemetryServer(AsyncService):
    """HTTP server for Prometheus scrapes and orchestrator probes. Constructing it does no I/O."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        registry: CollectorRegistry,
        health: HealthRegistry,
        log: Logger,
    ) -> None:
        self._host = host
        self._requested_port = port
        self._registry = registry
        self._health = health
        self._log = log
        self._runner: web.AppRunner | None = None
        self._bound_port: int | None = None

    @property
    def port(self) -> int:
        """The port actually bound (differs from the requested one when that was 0)."""
        if self._bound_port is None:
            raise RuntimeError("telemetry server has not been started")
        return self._bound_port

    @property
    def url(self) -> str:
        # An IPv6 literal needs brackets to be a valid URL authority.
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        """Bind and serve. Raises `TelemetryServerError`, with nothing left running, on failure."""
        if self._runner is not None:
            raise RuntimeError("telemetry server already started")
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=_SHUTDOWN_TIMEOUT_S)
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._requested_port)
        try:
            await site.start()
        except OSError as exc:
            # The runner holds no socket yet, but cleaning it up releases the app's resources
            # so a failed start leaks nothing and `stop` stays a no-op.
            await runner.cleanup()
            raise TelemetryServerError(
                f"telemetry.metrics: cannot listen on {self._host}:{self._requested_port}: "
                f"{_bind_failure(exc)}"
            ) from exc
        self._runner = runner
        # `addresses` lists every bound socket. A name resolving to several addresses (e.g.
        # "localhost" -> 127.0.0.1 and ::1) with port 0 gets one port per socket; the first is
        # reported.
        self._bound_port = int(runner.addresses[0][1])
        self._log.info("telemetry server listening", url=self.url)

    async def stop(self) -> None:
        """Stop serving and release the socket. Idempotent; a no-op if `start` never succeeded."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        await runner.cleanup()
        self._log.info("telemetry server stopped", url=self.url)

    # ------------------------------------------------------------------ handlers

    async def _metrics(self, request: web.Request) -> web.Response:
        try:
            payload = generate_latest(self._registry)
        except Exception as exc:
            # A broken collector costs one scrape (Prometheus records it as failed), not the
            # server: /healthz and /readyz must keep answering.
            self._log.error("metrics collection failed", exc_info=exc)
            return web.Response(
                status=500, text=f"metrics collection failed: {type(exc).__name__}: {exc}\n"
            )
        # CONTENT_TYPE_LATEST carries parameters (version, charset) that aiohttp's
        # `content_type=` argument rejects, so it goes in as a raw header.
        return web.Response(body=payload, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, request: web.Request) -> web.Response:
        status, body = self._health.liveness()
        return web.json_response(body, status=status)

    async def _readyz(self, request: web.Request) -> web.Response:
        status, body = self._health.readiness()
        return web.json_response(body, status=status)
