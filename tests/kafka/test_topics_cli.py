"""A user's `tradeengine topics create|describe` against a real broker, as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from engine.cli import main
from engine.kafka.admin import CreateResult, TopicAdmin, TopicSpec
from tests.kit.kafka import TansuBroker
from tests.kit.prometheus import free_port

ROOT = Path(__file__).resolve().parents[2]


def _write_config(directory: Path, bootstrap: str, *, enabled: bool = True) -> Path:
    path = directory / "engine.toml"
    path.write_text(
        f"""
[kafka]
enabled = {str(enabled).lower()}
bootstrap_servers = ["{bootstrap}"]

[[kafka.egress]]
bus_pattern = "signal.>"
topic = "te.signals"

[[kafka.ingress]]
topic = "te.external"

[[kafka.topics]]
name = "te.signals"
partitions = 2
retention_ms = 86400000
cleanup_policy = "delete"
"""
    )
    return path


def _tradeengine(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ},
        timeout=120,
    )


def test_topics_create_when_run_twice_then_created_then_exists_and_describe_shows_them(
    kafka_broker: TansuBroker, tmp_path: Path
) -> None:
    # Arrange
    config = _write_config(tmp_path, kafka_broker.bootstrap)
    # Act
    first = _tradeengine("topics", "create", "--config", str(config))
    second = _tradeengine("topics", "create", "--config", str(config))
    described = _tradeengine("topics", "describe", "--config", str(config), "--json")
    # Assert
    assert first.returncode == 0, first.stderr
    assert first.stdout.split() == [
        "te.external",
        "created",
        "te.signals",
        "created",
        "tradeengine.dlq",
        "created",
    ]
    assert second.returncode == 0, second.stderr
    assert [line.split()[:2] for line in second.stdout.splitlines()] == [
        ["te.external", "exists"],
        ["te.signals", "exists"],
        ["tradeengine.dlq", "exists"],
    ]
    assert "(" not in second.stdout  # no differences from the config
    assert described.returncode == 0, described.stderr
    rows = {row["name"]: row for row in json.loads(described.stdout)}
    assert rows["te.signals"] == {
        "name": "te.signals",
        "exists": True,
        "partitions": 2,
        "replication_factor": 1,
        "configs": {"cleanup.policy": "delete", "retention.ms": "86400000"},
        "used_by": "egress route 'signal.>'",
    }
    assert rows["te.external"]["partitions"] == 1
    assert rows["te.external"]["used_by"] == "ingress route"
    assert rows["tradeengine.dlq"]["used_by"] == "dead-letter topic"


def test_topics_describe_when_topics_missing_then_table_marks_them_and_creates_nothing(
    kafka_broker: TansuBroker, tmp_path: Path
) -> None:
    # Arrange: kafka.enabled = false still lets a user prepare topics
    config = _write_config(tmp_path, kafka_broker.bootstrap, enabled=False)
    # Act
    table = _tradeengine("topics", "describe", "--config", str(config))
    again = _tradeengine("topics", "describe", "--config", str(config), "--json")
    # Assert
    assert table.returncode == 0, table.stderr
    assert "kafka.enabled is false" in table.stderr
    header = table.stdout.splitlines()[0].split()
    assert header[:6] == [
        "topic",
        "exists",
        "partitions",
        "replication",
        "retention.ms",
        "cleanup.policy",
    ]
    signals = next(line for line in table.stdout.splitlines() if line.startswith("te.signals"))
    assert signals.split()[:2] == ["te.signals", "NO"]
    assert [row["exists"] for row in json.loads(again.stdout)] == [False, False, False]


def test_topics_create_when_topic_exists_with_other_shape_then_exists_with_differences(
    kafka_broker: TansuBroker, tmp_path: Path
) -> None:
    # Arrange: te.signals made by hand with 1 partition; the config says 2
    config = _write_config(tmp_path, kafka_broker.bootstrap)
    other = tmp_path / "other.toml"
    other.write_text(
        config.read_text().replace("partitions = 2\nretention_ms = 86400000\n", "partitions = 1\n")
    )
    assert _tradeengine("topics", "create", "--config", str(other)).returncode == 0
    # Act
    result = _tradeengine("topics", "create", "--config", str(config))
    # Assert
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith("te.signals"))
    assert "exists (has 1 partitions, config says 2;" in line
    assert "retention.ms is the broker default, config says 86400000" in line


def test_topics_create_when_broker_unreachable_then_one_clear_error_and_exit_2(
    tmp_path: Path,
) -> None:
    # Arrange
    bootstrap = f"127.0.0.1:{free_port()}"
    config = _write_config(tmp_path, bootstrap)
    # Act
    result = _tradeengine("topics", "create", "--config", str(config))
    # Assert
    assert result.returncode == 2
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"tradeengine: cannot reach the Kafka broker(s) {bootstrap} within 10s")
    assert "Unable to bootstrap" in line


def test_topics_describe_when_config_invalid_then_problems_and_exit_2(tmp_path: Path) -> None:
    # Arrange
    config = tmp_path / "engine.toml"
    config.write_text('[kafka]\nbootstrap_servers = []\n[[kafka.topics]]\nname = "bad name"\n')
    # Act
    result = _tradeengine("topics", "describe", "--config", str(config))
    # Assert
    assert result.returncode == 2
    assert "kafka.bootstrap_servers" in result.stderr
    assert "kafka.topics[0].name" in result.stderr


def test_topics_create_when_broker_refuses_a_topic_then_failed_line_and_exit_1(
    kafka_broker: TansuBroker,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Arrange: tansu accepts every CreateTopics request, so the refusal is simulated
    config = _write_config(tmp_path, kafka_broker.bootstrap)

    async def refuse_one(self: TopicAdmin, specs: Sequence[TopicSpec]) -> list[CreateResult]:
        return [
            CreateResult(s.name, "failed", "PolicyViolationError: no")
            if s.name == "te.signals"
            else CreateResult(s.name, "created", "")
            for s in specs
        ]

    monkeypatch.setattr(TopicAdmin, "create", refuse_one)
    # Act
    code = main(["topics", "create", "--config", str(config)])
    # Assert
    out = capsys.readouterr().out
    assert code == 1
    assert "te.signals       FAILED: PolicyViolationError: no" in out
    assert "te.external      created" in out
