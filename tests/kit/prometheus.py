"""A real Prometheus for tests, and checks on the monitoring assets the project ships.

The assets live next to the engine's telemetry code so they are installed with it:
`engine/telemetry/prometheus.yml` (the scrape config) and `engine/telemetry/grafana-dashboard.json`.

`PrometheusServer` is an *async* context manager: it runs Debian's `prometheus` binary with the
shipped scrape config, pointed at a target of the test's choosing and scraping every second::

    config = PROMETHEUS_YML.read_text()
    async with PrometheusServer(config, "127.0.0.1:9464", workdir=tmp_path) as prom:
        samples = await prom.wait_for_samples("tradeengine_ready")

The binaries are required, never optional: a missing `prometheus`/`promtool` fails the test
(`.ci/run` installs Debian's `prometheus` package).
"""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import pytest

import engine.telemetry

TELEMETRY_DIR = Path(engine.telemetry.__file__).resolve().parent
PROMETHEUS_YML: Path = TELEMETRY_DIR / "prometheus.yml"
GRAFANA_DASHBOARD: Path = TELEMETRY_DIR / "grafana-dashboard.json"

# The data source placeholder every panel and target uses (declared in the dashboard's __inputs).
DATASOURCE_UID = "${DS_PROMETHEUS}"

_METRIC_NAME = re.compile(r"\btradeengine_[a-z0-9_]+")
_HISTOGRAM_SERIES_SUFFIX = re.compile(r"_(bucket|sum|count)$")
# A target line of a static_configs list: `- "host:port"` or `- host:port`, alone on its line
# (comments never match: they start with `#`).
_TARGET_LINE = re.compile(r"""^(?P<lead>\s*-\s*)(?P<q>["']?)[\w.\-\[\]:]+:\d+(?P=q)\s*$""", re.M)
_SCRAPE_INTERVAL_LINE = re.compile(r"^(?P<lead>\s*scrape_interval:\s*)\S+\s*$", re.M)

READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 5.0


def require_binary(name: str) -> str:
    """The path of `name` on PATH; a missing binary fails the test (never a skip)."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"{name} is not installed: install Debian's 'prometheus' package (.ci/run does)"
        )
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (another process may take it first)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def promtool_check_metrics(text: str) -> subprocess.CompletedProcess[str]:
    """Run `promtool check metrics` (the exposition-format linter) on `text`, given on stdin.

    The caller asserts `returncode == 0` and shows stdout/stderr on failure.
    """
    promtool = require_binary("promtool")
    return subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )


def promtool_check_config(path: Path) -> subprocess.CompletedProcess[str]:
    """Run `promtool check config` on a Prometheus config file."""
    promtool = require_binary("promtool")
    return subprocess.run(
        [promtool, "check", "config", str(path)], capture_output=True, text=True, timeout=60
    )


def iter_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel of a dashboard that is not a row, including panels nested in (collapsed) rows."""

    def walk(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for panel in panels:
            if panel.get("type") != "row":
                yield panel
            yield from walk(panel.get("panels", []))

    return walk(dashboard.get("panels", []))


def dashboard_exprs(dashboard: dict[str, Any]) -> list[str]:
    """The PromQL `expr` of every panel target, in dashboard order."""
    return [
        target["expr"]
        for panel in iter_panels(dashboard)
        for target in panel.get("targets", [])
        if target.get("expr")
    ]


def dashboard_metric_names(dashboard: dict[str, Any]) -> set[str]:
    """Every `tradeengine_*` metric name the dashboard's panel targets query.

    A histogram is queried through its `_bucket`/`_sum`/`_count` series; those suffixes are
    stripped so the name is the histogram's own (no counter or gauge of the engine ends in them:
    counters end in `_total`). Other names are kept as written.
    """
    return {
        _HISTOGRAM_SERIES_SUFFIX.sub("", name)
        for expr in dashboard_exprs(dashboard)
        for name in _METRIC_NAME.findall(expr)
    }


def rewrite_scrape_config(config_text: str, target: str, scrape_interval: str = "1s") -> str:
    """The shipped scrape config with every scrape target replaced by `target` (host:port) and
    every `scrape_interval` set to `scrape_interval`.

    A text rewrite (PyYAML is not a dependency); it asserts that it found something to rewrite,
    so a reshaped prometheus.yml fails loudly instead of scraping the wrong address.
    """
    text, targets = _TARGET_LINE.subn(lambda m: f'{m["lead"]}"{target}"', config_text)
    assert targets >= 1, f"no `- host:port` target line to rewrite in:\n{config_text}"
    text, intervals = _SCRAPE_INTERVAL_LINE.subn(lambda m: f"{m['lead']}{scrape_interval}", text)
    assert intervals >= 1, f"no `scrape_interval:` line to rewrite in:\n{config_text}"
    assert f'"{target}"' in text
    return text


class PrometheusServer:
    """An async context manager running `prometheus` against one scrape target.

    It writes the rewritten config, the TSDB (`data/`) and the server's log (`prometheus.log`)
    into `workdir` (typically pytest's `tmp_path`), and deletes none of it. Without a `workdir`
    it creates a temporary directory and removes that directory (only) on exit.

    Prometheus 2.42 hands new targets to its scrape loop about 5 s after start (service
    discovery's update throttle), so first samples arrive some 5-6 s after the server is ready.
    """

    def __init__(
        self,
        config_text: str,
        target: str,
        *,
        workdir: Path | None = None,
        scrape_interval: str = "1s",
    ) -> None:
        self.config_text = rewrite_scrape_config(config_text, target, scrape_interval)
        self.target = target
        self._workdir = workdir
        self._owns_workdir = workdir is None
        self._proc: asyncio.subprocess.Process | None = None
        self._client: httpx.AsyncClient | None = None
        self.port = 0

    @property
    def workdir(self) -> Path:
        assert self._workdir is not None, "PrometheusServer is not started"
        return self._workdir

    @property
    def config_path(self) -> Path:
        return self.workdir / "prometheus.yml"

    @property
    def log_path(self) -> Path:
        return self.workdir / "prometheus.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def _prepare(self) -> None:
        if self._workdir is None:
            self._workdir = Path(tempfile.mkdtemp(prefix="prometheus-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.config_text)

    async def __aenter__(self) -> PrometheusServer:
        binary = require_binary("prometheus")
        self._prepare()
        self._client = httpx.AsyncClient(timeout=10.0, trust_env=False)
        try:
            for attempt in range(3):
                self.port = free_port()
                await self._spawn(binary)
                if await self._wait_ready():
                    return self
                # The port was taken between free_port() and the bind: try another one.
                if attempt == 2 or "address already in use" not in self.log_tail().lower():
                    pytest.fail(
                        f"prometheus exited with code {self._proc_returncode()} before it was"
                        f" ready; log tail:\n{self.log_tail()}"
                    )
        except BaseException:
            await self._stop()
            raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stop()

    async def _spawn(self, binary: str) -> None:
        with self.log_path.open("ab") as log:
            self._proc = await asyncio.create_subprocess_exec(
                binary,
                f"--config.file={self.config_path}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )

    def _proc_returncode(self) -> int | None:
        return None if self._proc is None else self._proc.returncode

    async def _wait_ready(self) -> bool:
        """True once GET /-/ready answers 200; False if the process exited; fails on timeout."""
        assert self._proc is not None
        assert self._client is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READY_TIMEOUT_S
        while loop.time() < deadline:
            if self._proc.returncode is not None:
                return False
            try:
                response = await self._client.get(f"{self.url}/-/ready")
                if response.status_code == 200:
                    return True
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
        pytest.fail(
            f"prometheus not ready at {self.url} after {READY_TIMEOUT_S:.0f}s;"
            f" log tail:\n{self.log_tail()}"
        )

    async def _stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()
        if self._owns_workdir and self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    async def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query (GET /api/v1/query); asserts success and returns `data.result`."""
        assert self._client is not None, "PrometheusServer is not started"
        response = await self._client.get(f"{self.url}/api/v1/query", params={"query": expr})
        body: dict[str, Any] = response.json()
        assert body.get("status") == "success", f"query {expr!r} failed: {body}"
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    async def wait_for_samples(self, expr: str, timeout_s: float = 30.0) -> list[dict[str, Any]]:
        """Poll `expr` until it returns at least one sample; fail with the targets' state if not."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            result = await self.query(expr)
            if result:
                return result
            if loop.time() >= deadline:
                break
            await asyncio.sleep(0.25)
        assert self._client is not None
        targets = (await self._client.get(f"{self.url}/api/v1/targets")).json()
        pytest.fail(
            f"no samples for {expr!r} after {timeout_s:.0f}s; targets: {targets};"
            f" log tail:\n{self.log_tail()}"
        )
