"""A running engine is observable: traces from bar to fill, /metrics, /healthz, /readyz.

Every test runs a real replay on the bundled data and talks to the engine over real HTTP.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Awaitable, Callable
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from config import EngineConfig, load_config, load_config_text
from engine.app import Engine, RunDirError, RunOptions, StartupError
from engine.telemetry.logging import REDACTED
from tests.kit.agents import LEAKED_SECRET_ENV
from tests.kit.config import on_free_port
from tests.kit.prometheus import (
    GRAFANA_DASHBOARD,
    PROMETHEUS_YML,
    PrometheusServer,
    dashboard_metric_names,
    promtool_check_metrics,
)

from .conftest import ROOT, default_config


def _engine(cfg: EngineConfig, tmp_path: Path, start: date, end: date, **kwargs: Any) -> Engine:
    engine = Engine(
        on_free_port(cfg),
        options=RunOptions(start=start, end=end, run_dir=tmp_path / "run", base_dir=ROOT),
        **kwargs,
    )
    engine.prepare()
    return engine


def _url(engine: Engine, path: str) -> str:
    assert engine.telemetry.server is not None
    return f"{engine.telemetry.server.url}{path}"


async def _during_run(engine: Engine, probe: Callable[[], Awaitable[bool]]) -> bool:
    """Run the replay and call `probe` between steps until it returns True or the run ends."""
    run = asyncio.create_task(engine.run())
    seen = False
    while not run.done():
        if await probe():
            seen = True
            break
        await asyncio.sleep(0.01)
    assert await run
    return seen


def run_steps(text: str) -> float:
    for family in text_string_to_metric_families(text):
        if family.name == "tradeengine_replay_steps":
            return family.samples[0].value
    return 0.0


def _parents(spans: list[ReadableSpan]) -> dict[int, ReadableSpan]:
    return {s.context.span_id: s for s in spans}


def _ancestry(span: ReadableSpan, by_id: dict[int, ReadableSpan]) -> list[ReadableSpan]:
    chain = [span]
    while chain[-1].parent is not None and chain[-1].parent.span_id in by_id:
        chain.append(by_id[chain[-1].parent.span_id])
    return chain


async def test_replay_when_tracing_on_then_a_fills_trace_holds_its_whole_causal_chain(
    tmp_path: Path,
) -> None:
    # Arrange
    exporter = InMemorySpanExporter()
    engine = _engine(
        default_config(), tmp_path, date(2005, 1, 1), date(2006, 12, 31), span_exporter=exporter
    )
    # Act
    async with engine:
        assert await engine.run()
    spans = list(exporter.get_finished_spans())
    # Assert
    fills = [s for s in spans if s.name == "fill"]
    assert fills, "the replay must produce fills"
    by_id = _parents(spans)
    journal_fills = {f["fill_id"]: f for f in engine.journal.fills()} if engine.journal else {}
    complete = 0
    for fill in fills:
        chain = _ancestry(fill, by_id)
        names = [s.name for s in chain]
        trace_ids = {s.context.trace_id for s in chain}
        assert trace_ids == {fill.context.trace_id}, names
        assert names[:2] == ["fill", "order"], names
        if names[:7] == [
            "fill",
            "order",
            "intent",
            "selection",
            "opportunity",
            "signal",
            "source.bar",
        ]:
            complete += 1
            root = chain[-1]
            assert root.parent is None  # the bar's span is the trace's real root
            attrs = fill.attributes or {}
            journal_row = journal_fills[str(attrs["tradeengine.fill_id"])]
            assert int(journal_row["trace_id"], 16) == fill.context.trace_id
            assert (chain[2].attributes or {})["tradeengine.symbol"] == journal_row["symbol"]
    # every entry fill (a fill of an opening intent) has the full chain; exits hang off the
    # entry's trace without a selection, so they are not counted here
    opening = sum(1 for f in engine.journal.fills() if f["side"] == "buy") if engine.journal else 0
    assert complete >= 1
    assert complete == opening


async def test_run_when_scraped_over_http_then_metrics_pass_promtool_and_cover_the_dashboard(
    tmp_path: Path,
) -> None:
    # Arrange
    engine = _engine(default_config(), tmp_path, date(2005, 1, 1), date(2005, 12, 31))
    texts: list[str] = []
    async with engine, httpx.AsyncClient() as client:

        async def scrape() -> bool:
            response = await client.get(_url(engine, "/metrics"))
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/plain")
            texts.append(response.text)
            return run_steps(response.text) > 0

        # Act: scrape while the replay runs, until the pipeline has completed steps
        seen = await _during_run(engine, scrape)
        final = (await client.get(_url(engine, "/metrics"))).text
    # Assert
    assert seen, "no scrape during the run saw a completed step"
    assert 0 < run_steps(texts[-1]) < run_steps(final)  # that scrape was mid-run
    mid_run = promtool_check_metrics(texts[-1])
    assert mid_run.returncode == 0, mid_run.stdout + mid_run.stderr
    check = promtool_check_metrics(final)
    assert check.returncode == 0, check.stdout + check.stderr
    exported = {
        sample.name for family in text_string_to_metric_families(final) for sample in family.samples
    }
    exported_bases = exported | {
        n.removesuffix(suffix) for n in exported for suffix in ("_bucket", "_sum", "_count")
    }
    dashboard = json.loads(GRAFANA_DASHBOARD.read_text())
    missing = dashboard_metric_names(dashboard) - exported_bases
    assert not missing, f"dashboard queries metrics the engine does not export: {missing}"
    families = {f.name: f for f in text_string_to_metric_families(final)}
    signals = {s.labels["agent"]: s.value for s in families["tradeengine_signals"].samples}
    assert engine.supervisor is not None
    assert engine.workers is not None  # engine.toml runs seven agents in a worker process
    agents: dict[str, Any] = {**engine.supervisor.runners, **engine.workers.agents}
    assert len(agents) == 10
    assert set(signals) == set(agents)
    assert sum(signals.values()) == sum(a.stats.signals for a in agents.values())
    handler = families["tradeengine_agent_handler_duration_seconds"]
    counts = {s.labels["agent"]: s.value for s in handler.samples if s.name.endswith("_count")}
    assert counts["momentum"] > 0


async def test_run_when_real_prometheus_scrapes_the_shipped_config_then_signals_recorded(
    tmp_path: Path,
) -> None:
    # Arrange: two years, so the agents are past their warm-up and have emitted signals
    engine = _engine(default_config(), tmp_path, date(2005, 1, 1), date(2006, 12, 31))
    async with engine:
        assert engine.telemetry.port is not None
        target = f"127.0.0.1:{engine.telemetry.port}"
        assert await engine.run()
        # Act: the engine keeps serving after the replay until stop()
        async with PrometheusServer(
            PROMETHEUS_YML.read_text(), target, workdir=tmp_path / "prom"
        ) as prometheus:
            result = await prometheus.wait_for_samples("tradeengine_signals_total", timeout_s=60)
    # Assert
    by_agent = {r["metric"]["agent"]: float(r["value"][1]) for r in result}
    assert set(by_agent) == {a.name for a in default_config().agents if a.enabled}
    assert len(by_agent) == 10
    assert all(r["metric"]["job"] == "tradeengine" for r in result)
    assert sum(by_agent.values()) > 0


async def test_readyz_when_no_watermark_yet_then_503_and_after_the_first_then_200(
    tmp_path: Path,
) -> None:
    # Arrange
    engine = _engine(default_config(), tmp_path, date(2005, 1, 1), date(2005, 12, 31))
    async with engine, httpx.AsyncClient() as client:
        # Act
        before = await client.get(_url(engine, "/readyz"))
        ready: list[dict[str, Any]] = []

        async def probe() -> bool:
            response = await client.get(_url(engine, "/readyz"))
            if response.status_code == 200:
                ready.append(response.json())
                return True
            return False

        seen = await _during_run(engine, probe)
    # Assert
    assert before.status_code == 503
    assert "no watermark processed yet" in before.json()["not_ready"]
    assert seen
    assert ready[0]["ready"] is True
    assert ready[0]["components"]["risk"]["state"] == "RUNNING"


async def test_healthz_when_an_agent_is_quarantined_then_degraded_naming_the_agent(
    tmp_path: Path,
) -> None:
    # Arrange: the default run plus an agent that fails on every bar
    broken = load_config_text(
        '[[agents]]\nname = "broken"\npath = "tests.kit.agents:BrokenAgent"\n', env={}
    ).agents
    base = default_config()
    cfg = base.model_copy(update={"agents": [*base.agents, *broken]})
    engine = _engine(cfg, tmp_path, date(2005, 1, 1), date(2005, 3, 31))
    async with engine, httpx.AsyncClient() as client:
        # Act
        assert await engine.run()
        health = await client.get(_url(engine, "/healthz"))
        metrics = (await client.get(_url(engine, "/metrics"))).text
    # Assert
    body = health.json()
    assert health.status_code == 200  # degraded is alive: a restart would not fix the agent
    assert body["status"] == "DEGRADED"
    assert "agent.broken" in body["reason"]
    assert body["components"]["agent.broken"]["state"] == "FAULTED"
    assert body["components"]["agent.momentum"]["state"] == "RUNNING"
    assert 'tradeengine_agent_quarantines_total{agent="broken"} 1.0' in metrics
    assert 'tradeengine_component_state{component="agent.broken",state="FAULTED"} 1.0' in metrics


async def test_run_when_risk_stage_faults_then_not_ready_and_risk_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Arrange
    from engine.stages.risk import RiskStage

    def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise ZeroDivisionError("injected fault in the risk stage")

    monkeypatch.setattr(RiskStage, "decide", broken)
    engine = _engine(default_config(), tmp_path, date(2005, 1, 1), date(2005, 3, 31))
    async with engine, httpx.AsyncClient() as client:
        # Act
        with pytest.raises(RuntimeError, match="injected fault"):
            await engine.run()
        ready = await client.get(_url(engine, "/readyz"))
        live = await client.get(_url(engine, "/healthz"))
    # Assert
    assert ready.status_code == 503
    assert live.status_code == 503
    assert live.json()["components"]["risk"]["state"] == "FAULTED"
    assert "injected fault" in live.json()["components"]["risk"]["reason"]


async def test_start_when_metrics_port_in_use_then_startup_error_and_nothing_written(
    tmp_path: Path,
) -> None:
    # Arrange
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg = default_config()
        metrics = cfg.telemetry.metrics.model_copy(update={"port": port})
        cfg = cfg.model_copy(
            update={"telemetry": cfg.telemetry.model_copy(update={"metrics": metrics})}
        )
        engine = Engine(
            cfg,
            options=RunOptions(
                start=date(2005, 1, 1),
                end=date(2005, 1, 31),
                run_dir=tmp_path / "run",
                base_dir=ROOT,
            ),
        )
        engine.prepare()
        # Act
        with pytest.raises(StartupError) as caught:
            await engine.start()
        await engine.stop()
    # Assert
    assert f"cannot listen on 127.0.0.1:{port}" in str(caught.value)
    assert "in use" in str(caught.value)
    assert not (tmp_path / "run").exists()


async def test_run_when_otlp_collector_unreachable_then_trading_unaffected_and_tracing_degraded(
    tmp_path: Path,
) -> None:
    # Arrange: a well-formed endpoint nobody listens on
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()[1]
    cfg = default_config()
    tracing = cfg.telemetry.tracing.model_copy(
        update={
            "otlp_endpoint": f"http://127.0.0.1:{dead}",
            "otlp_protocol": "http/protobuf",
            "otlp_timeout_s": 1.0,
        }
    )
    cfg = cfg.model_copy(
        update={"telemetry": cfg.telemetry.model_copy(update={"tracing": tracing})}
    )
    base = default_config()
    off = base.model_copy(
        update={
            "telemetry": base.telemetry.model_copy(
                update={
                    "metrics": base.telemetry.metrics.model_copy(update={"enabled": False}),
                    "tracing": base.telemetry.tracing.model_copy(update={"enabled": False}),
                }
            )
        }
    )
    reference = _engine(off, tmp_path / "ref", date(2005, 1, 1), date(2005, 6, 30))
    engine = _engine(cfg, tmp_path, date(2005, 1, 1), date(2005, 6, 30))
    threads: list[int] = []
    engine.health.add_listener(lambda *_: threads.append(threading.get_ident()))
    # Act
    async with reference:
        assert await reference.run()
    assert reference.telemetry.server is None  # telemetry really off
    async with engine:
        assert await engine.run()
        assert engine.telemetry.tracing is not None
        for _ in range(300):  # the batch processor exports about once a second
            if engine.telemetry.tracing.export_failures:
                break
            await asyncio.sleep(0.1)
        for _ in range(50):  # the exporter thread hands the state change to the loop
            if engine.health.overall()[0].value == "DEGRADED":
                break
            await asyncio.sleep(0.1)
        health = {c.name: c for c in engine.health.components()}
    # Assert: the same decisions as without tracing; the exporter's failure is visible
    assert engine.journal is not None
    assert reference.journal is not None
    # (telemetry settings are not part of the config hash the decisions carry)
    for table in ("decisions", "orders", "fills", "snapshots"):
        assert engine.journal.table_digest(table) == reference.journal.table_digest(table)
    assert threads
    assert set(threads) == {threading.get_ident()}  # health is only touched on the loop thread
    assert health["tracing"].state.value == "DEGRADED"
    assert engine.telemetry.tracing is not None
    assert engine.telemetry.tracing.export_failures >= 1


async def test_healthz_when_an_error_echoes_a_secret_then_reason_is_masked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Arrange: a password from the environment, and an agent whose errors echo it
    canary = "canary-health-5e1d0c"
    monkeypatch.setenv(LEAKED_SECRET_ENV, canary)
    leaky = load_config_text(
        '[[agents]]\nname = "leaky"\npath = "tests.kit.agents:LeakyAgent"\n', env={}
    ).agents
    base = load_config(ROOT / "engine.toml", env={LEAKED_SECRET_ENV: canary})
    cfg = base.model_copy(update={"agents": [*base.agents, *leaky]})
    engine = _engine(cfg, tmp_path, date(2005, 1, 1), date(2005, 3, 31))
    async with engine, httpx.AsyncClient() as client:
        # Act
        assert await engine.run()
        health = (await client.get(_url(engine, "/healthz"))).text
        ready = (await client.get(_url(engine, "/readyz"))).text
        metrics = (await client.get(_url(engine, "/metrics"))).text
    # Assert
    assert "agent.leaky" in health
    assert "AUTH failed for password" in health
    assert REDACTED in health
    for text in (health, ready, metrics):
        assert canary not in text


async def test_start_when_run_dir_unusable_then_telemetry_released_before_the_error(
    tmp_path: Path,
) -> None:
    # Arrange: the run directory exists and is not empty, which start() refuses
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "old.txt").write_text("x")
    engine = _engine(default_config(), tmp_path, date(2005, 1, 1), date(2005, 1, 31))
    # Act
    with pytest.raises(RunDirError):
        await engine.start()
    # Assert: the HTTP port was bound by start() and is free again
    port = engine.telemetry.port
    assert port is not None
    with socket.socket() as again:
        again.bind(("127.0.0.1", port))
    await engine.stop()  # idempotent after the failed start
