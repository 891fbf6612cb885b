"""Structured logs: JSON lines with the bound fields, per-component levels, secrets never shown."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from config import load_config_text
from config.models import secret_values
from engine.telemetry.logging import REDACTED, configure_logging, get_logger

ROOT = Path(__file__).resolve().parents[2]
CANARY_PASSWORD = "canary-pw-7f3a9c1e5b"
CANARY_SASL = "canary-sasl-0d4e8b2a61"


@pytest.fixture(autouse=True)
def _restore_structlog() -> Iterator[None]:
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_log_when_json_format_then_one_json_object_per_line_with_bound_fields() -> None:
    # Arrange
    stream = io.StringIO()
    configure_logging("info", "json", stream=stream)
    log = get_logger("agent").bind(agent="momentum")
    # Act
    log.info("signal emitted", symbol="AAPL", trace_id="ab" * 16)
    log.debug("below the level")
    # Assert
    (record,) = _lines(stream)
    assert record["event"] == "signal emitted"
    assert record["component"] == "agent"
    assert record["agent"] == "momentum"
    assert record["symbol"] == "AAPL"
    assert record["trace_id"] == "ab" * 16
    assert record["level"] == "info"
    assert str(record["timestamp"]).endswith("Z")


def test_log_when_span_lookup_knows_the_trace_then_record_carries_span_id() -> None:
    # Arrange
    stream = io.StringIO()
    spans = {"cd" * 16: "0123456789abcdef"}
    configure_logging("info", "json", stream=stream, span_lookup=spans.get)
    log = get_logger("pipeline")
    # Act
    log.info("with span", trace_id="cd" * 16)
    log.info("unknown trace", trace_id="ef" * 16)
    log.info("no trace")
    # Assert
    first, second, third = _lines(stream)
    assert first["span_id"] == "0123456789abcdef"
    assert "span_id" not in second
    assert "span_id" not in third


def test_log_when_component_levels_set_then_each_component_filtered_by_its_own_level() -> None:
    # Arrange
    stream = io.StringIO()
    configure_logging(
        "warning",
        "json",
        stream=stream,
        component_levels={"pipeline": "debug", "agent.momentum": "debug", "blender": "error"},
    )
    # Act
    get_logger("pipeline").debug("pipeline debug")
    get_logger("agent").bind(agent="momentum").debug("momentum debug")
    get_logger("agent").bind(agent="reversal").debug("reversal debug")
    get_logger("agent").bind(agent="reversal").warning("reversal warning")
    get_logger("blender").warning("blender warning")
    get_logger("blender").error("blender error")
    get_logger("engine").info("engine info")
    # Assert
    assert [r["event"] for r in _lines(stream)] == [
        "pipeline debug",
        "momentum debug",
        "reversal warning",
        "blender error",
    ]


def test_configure_when_level_unknown_then_value_error_names_it() -> None:
    # Act / Assert
    with pytest.raises(ValueError, match=r"pipeline='verbose'"):
        configure_logging("info", "json", component_levels={"pipeline": "verbose"})


def test_log_when_secret_reaches_a_record_then_every_occurrence_is_redacted() -> None:
    # Arrange: secrets loaded from the environment, as the engine does
    cfg = load_config_text(
        "",
        env={
            "TRADEENGINE__FEATURE_STORE__REDIS__PASSWORD": CANARY_PASSWORD,
            "TRADEENGINE__KAFKA__SASL_PASSWORD": CANARY_SASL,
        },
    )
    secrets = secret_values(cfg)
    assert sorted(secrets) == sorted([CANARY_PASSWORD, CANARY_SASL])
    stream = io.StringIO()
    configure_logging("debug", "json", stream=stream, secrets=secrets)
    log = get_logger("engine")
    # Act: the ways a secret can slip into a log line
    log.info(f"connecting with {CANARY_PASSWORD}")
    log.info(
        "nested", detail={"auth": [f"user:{CANARY_SASL}"]}, url=f"redis://u:{CANARY_PASSWORD}@h"
    )
    try:
        raise ConnectionError(f"AUTH {CANARY_PASSWORD} rejected")
    except ConnectionError:
        log.exception("redis refused")
    log.info("config", config=repr(cfg))
    # Assert
    text = stream.getvalue()
    assert CANARY_PASSWORD not in text
    assert CANARY_SASL not in text
    assert text.count(REDACTED) >= 4
    assert len(_lines(stream)) == 4


def test_run_when_config_holds_secrets_then_no_log_line_contains_them(tmp_path: Path) -> None:
    # Arrange: a short replay at debug level, secrets in the environment (the only way in)
    # plus an agent whose errors echo the password, as a client library refusing auth might
    config = tmp_path / "engine.toml"
    config.write_text(
        (ROOT / "engine.toml").read_text().replace('log_level = "info"', 'log_level = "debug"')
        + '\n[[agents]]\nname = "leaky"\npath = "tests.kit.agents:LeakyAgent"\n'
    )
    env = {
        **os.environ,
        "TRADEENGINE__FEATURE_STORE__REDIS__PASSWORD": CANARY_PASSWORD,
        "TRADEENGINE__KAFKA__SASL_PASSWORD": CANARY_SASL,
        "TRADEENGINE__TELEMETRY__LOG_FORMAT": "json",
        "TRADEENGINE__TELEMETRY__METRICS__PORT": "0",
    }
    # Act
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine.cli",
            "run",
            "--config",
            str(config),
            "--paper",
            "--start",
            "2010-01-01",
            "--end",
            "2010-03-31",
            "--run-dir",
            str(tmp_path / "run"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=300,
    )
    # Assert
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert len(records) >= 3
    assert all("component" in r and "level" in r and "timestamp" in r for r in records)
    assert {"engine", "telemetry"} <= {r["component"] for r in records}
    leaks = [r for r in records if r.get("agent") == "leaky" and "exception" in r]
    assert leaks, "the leaky agent's failures must be logged"
    assert all(REDACTED in str(r["exception"]) for r in leaks)
    for output in (result.stdout, result.stderr):
        assert CANARY_PASSWORD not in output
        assert CANARY_SASL not in output
    for path in (tmp_path / "run").rglob("*"):
        if path.is_file():
            assert CANARY_PASSWORD.encode() not in path.read_bytes()
