"""The shipped monitoring assets (Prometheus scrape config, Grafana dashboard) and the test kit
that runs a real Prometheus against them (tests/kit/prometheus.py).

These tests check structure and tooling only; that every metric the dashboard queries is one
the engine exports is checked against a live engine's /metrics elsewhere.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from tests.kit.prometheus import (
    DATASOURCE_UID,
    GRAFANA_DASHBOARD,
    PROMETHEUS_YML,
    PrometheusServer,
    dashboard_exprs,
    dashboard_metric_names,
    free_port,
    iter_panels,
    promtool_check_config,
    promtool_check_metrics,
    rewrite_scrape_config,
)

HOST = "127.0.0.1"


def _load_dashboard() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(GRAFANA_DASHBOARD.read_text())
    return dashboard


def _datasource_uid(datasource: object) -> object:
    """A panel's or target's data source: `{"type": ..., "uid": ...}` or a bare string."""
    return datasource.get("uid") if isinstance(datasource, dict) else datasource


@asynccontextmanager
async def _serve_metrics(registry: CollectorRegistry) -> AsyncIterator[str]:
    """Serve `generate_latest(registry)` at /metrics on a free port; yield its host:port."""

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, HOST, 0)
        await site.start()
        port = runner.addresses[0][1]
        yield f"{HOST}:{port}"
    finally:
        await runner.cleanup()


# ---------------------------------------------------------------------------- prometheus.yml


def test_promtool_check_config_when_shipped_scrape_config_then_valid(tmp_path: Path) -> None:
    # Arrange
    config = tmp_path / "prometheus.yml"
    shutil.copyfile(PROMETHEUS_YML, config)
    # Act
    result = promtool_check_config(config)
    # Assert
    assert result.returncode == 0, result.stdout + result.stderr


def test_shipped_scrape_config_when_read_then_scrapes_default_metrics_endpoint_every_5s() -> None:
    # Arrange / Act
    text = PROMETHEUS_YML.read_text()
    # Assert
    assert "job_name: tradeengine" in text
    assert "metrics_path: /metrics" in text
    assert '- "127.0.0.1:9464"' in text
    assert "scrape_interval: 5s" in text


def test_rewrite_scrape_config_when_target_given_then_valid_config_scraping_it_every_1s(
    tmp_path: Path,
) -> None:
    # Arrange
    target = f"{HOST}:{free_port()}"
    # Act
    text = rewrite_scrape_config(PROMETHEUS_YML.read_text(), target)
    # Assert
    assert f'- "{target}"' in text
    assert '- "127.0.0.1:9464"' not in text
    assert "scrape_interval: 1s" in text
    assert "scrape_interval: 5s" not in text
    config = tmp_path / "prometheus.yml"
    config.write_text(text)
    result = promtool_check_config(config)
    assert result.returncode == 0, result.stdout + result.stderr


def test_rewrite_scrape_config_when_no_target_line_then_fails_loudly() -> None:
    # Arrange
    text = "global:\n  scrape_interval: 5s\nscrape_configs: []\n"
    # Act / Assert
    with pytest.raises(AssertionError, match="no `- host:port` target line"):
        rewrite_scrape_config(text, f"{HOST}:1234")


# ---------------------------------------------------------------------------- dashboard


def test_dashboard_when_loaded_then_importable_model_with_prometheus_input() -> None:
    # Arrange / Act
    dashboard = _load_dashboard()
    # Assert
    assert dashboard["title"] == "tradeengine"
    assert dashboard["schemaVersion"] >= 36
    assert dashboard.get("id") is None
    inputs = {i["name"]: i for i in dashboard["__inputs"]}
    assert inputs["DS_PROMETHEUS"]["type"] == "datasource"
    assert inputs["DS_PROMETHEUS"]["pluginId"] == "prometheus"


def test_dashboard_panels_when_loaded_then_each_queries_prometheus_input() -> None:
    # Arrange
    dashboard = _load_dashboard()
    # Act
    panels = list(iter_panels(dashboard))
    # Assert
    assert panels
    for panel in panels:
        title = panel.get("title")
        assert title, panel
        assert _datasource_uid(panel.get("datasource")) == DATASOURCE_UID, title
        targets = panel.get("targets", [])
        assert targets, f"panel {title!r} has no target"
        ref_ids = [t.get("refId") for t in targets]
        assert len(set(ref_ids)) == len(ref_ids), f"panel {title!r} repeats a refId"
        for target in targets:
            assert target.get("expr", "").strip(), f"panel {title!r} has an empty expr"
            if "datasource" in target:
                assert _datasource_uid(target["datasource"]) == DATASOURCE_UID, title


def test_dashboard_layout_when_loaded_then_unique_ids_and_no_overlapping_panels() -> None:
    # Arrange
    dashboard = _load_dashboard()
    top_level = dashboard["panels"]
    # Act
    ids = [p["id"] for p in top_level] + [c["id"] for p in top_level for c in p.get("panels", [])]
    cells: dict[tuple[int, int], str] = {}
    overlaps = []
    for panel in top_level:
        pos = panel["gridPos"]
        assert 0 <= pos["x"] < pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                if (x, y) in cells:
                    overlaps.append((cells[(x, y)], panel["title"]))
                cells[(x, y)] = panel["title"]
    # Assert
    assert len(set(ids)) == len(ids)
    assert not overlaps, sorted(set(overlaps))


def test_dashboard_metric_names_when_shipped_dashboard_then_only_engine_metrics() -> None:
    # Arrange
    dashboard = _load_dashboard()
    # Act
    names = dashboard_metric_names(dashboard)
    # Assert
    assert names
    assert all(name.startswith("tradeengine_") for name in names)
    assert "tradeengine_agent_handler_duration_seconds" in names
    assert not any(name.endswith(("_bucket", "_sum", "_count")) for name in names)
    assert all("$" not in expr for expr in dashboard_exprs(dashboard)), "exprs must be plain PromQL"


def test_dashboard_metric_names_when_nested_rows_and_histogram_series_then_base_names() -> None:
    # Arrange
    dashboard = {
        "panels": [
            {"type": "timeseries", "targets": [{"expr": "rate(tradeengine_orders_total[1m])"}]},
            {
                "type": "row",
                "collapsed": True,
                "panels": [
                    {
                        "type": "timeseries",
                        "targets": [
                            {
                                "expr": "histogram_quantile(0.99, sum by (le) "
                                "(rate(tradeengine_event_loop_lag_seconds_bucket[1m])))"
                            },
                            {"expr": "tradeengine_stage_duration_seconds_sum"},
                            {"expr": "tradeengine_stage_duration_seconds_count"},
                            {"expr": "tradeengine_bus_mailbox_depth_messages / on() vector(1)"},
                        ],
                    }
                ],
            },
        ]
    }
    # Act
    names = dashboard_metric_names(dashboard)
    # Assert
    assert names == {
        "tradeengine_orders_total",
        "tradeengine_event_loop_lag_seconds",
        "tradeengine_stage_duration_seconds",
        "tradeengine_bus_mailbox_depth_messages",
    }


# ---------------------------------------------------------------------------- the kit, live


def test_promtool_check_metrics_when_prometheus_client_exposition_then_passes() -> None:
    # Arrange
    registry = CollectorRegistry()
    signals = Counter("tradeengine_signals", "Signals emitted.", ["agent"], registry=registry)
    signals.labels(agent="momentum").inc()
    # Act
    result = promtool_check_metrics(generate_latest(registry).decode())
    # Assert
    assert result.returncode == 0, result.stdout + result.stderr


async def test_prometheus_server_when_scraping_served_registry_then_samples_with_agent_label(
    tmp_path: Path,
) -> None:
    # Arrange
    registry = CollectorRegistry()
    signals = Counter("tradeengine_signals", "Signals emitted.", ["agent"], registry=registry)
    signals.labels(agent="momentum").inc(3)
    config = PROMETHEUS_YML.read_text()
    async with (
        _serve_metrics(registry) as target,
        PrometheusServer(config, target, workdir=tmp_path) as prometheus,
    ):
        # Act
        samples = await prometheus.wait_for_samples("tradeengine_signals_total")
    # Assert
    assert [s["metric"]["agent"] for s in samples] == ["momentum"]
    assert samples[0]["metric"]["job"] == "tradeengine"
    assert float(samples[0]["value"][1]) == 3.0
    assert "scrape_interval: 1s" in (tmp_path / "prometheus.yml").read_text()


async def test_dashboard_exprs_when_sent_to_prometheus_then_every_one_is_valid_promql(
    tmp_path: Path,
) -> None:
    # Arrange: nothing listens on the target; only the query parser is exercised.
    exprs = dashboard_exprs(_load_dashboard())
    async with PrometheusServer(
        PROMETHEUS_YML.read_text(), f"{HOST}:{free_port()}", workdir=tmp_path
    ) as prometheus:
        # Act / Assert: query() asserts status == success (a parse error is status == error)
        for expr in exprs:
            await prometheus.query(expr)
