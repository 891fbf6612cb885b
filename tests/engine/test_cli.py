"""The `tradeengine` command, run as a user runs it: a real subprocess, real exit codes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from contracts import ALL_CONTRACTS

ROOT = Path(__file__).resolve().parents[2]


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


def test_help_when_asked_then_lists_commands() -> None:
    # Arrange / Act
    result = _cli("--help")
    # Assert
    assert result.returncode == 0
    for command in ("run", "config", "contracts"):
        assert command in result.stdout


def test_config_validate_when_three_independent_mistakes_then_all_listed_exit_2(
    tmp_path: Path,
) -> None:
    # Arrange
    path = tmp_path / "engine.toml"
    path.write_text(
        "[risk]\n"
        'max_positions = "five"\n'
        "\n"
        "[selector]\n"
        "top_kk = 3\n"
        "\n"
        "[telemetry.tracing]\n"
        "sampling_ratio = 1.5\n"
    )
    # Act
    result = _cli("config", "validate", str(path))
    # Assert
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert any("risk.max_positions" in ln and ":2:" in ln for ln in lines), lines
    assert any("selector.top_kk" in ln and "top_k" in ln and ":5:" in ln for ln in lines), lines
    assert any("telemetry.tracing.sampling_ratio" in ln and ":8:" in ln for ln in lines), lines
    assert "3 problem(s)" in result.stderr


def test_config_validate_when_default_engine_toml_then_ok() -> None:
    # Arrange / Act
    result = _cli("config", "validate", "engine.toml")
    # Assert
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout


def test_config_validate_when_agent_import_and_params_bad_then_one_line_each(
    tmp_path: Path,
) -> None:
    # Arrange
    path = tmp_path / "engine.toml"
    path.write_text(
        "[[agents]]\n"
        'name = "ghost"\n'
        'path = "plugins.does_not_exist:Ghost"\n'
        "\n"
        "[[agents]]\n"
        'name = "sma"\n'
        'path = "plugins.sma_cross:SmaCrossAgent"\n'
        "params = { fast = -1 }\n"
    )
    # Act
    result = _cli("config", "validate", str(path))
    # Assert
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 3, lines
    assert "agents[0] (ghost): cannot import module 'plugins.does_not_exist'" in lines[0]
    assert "agents[1] (sma).params.fast: Input should be greater than or equal to 2" in lines[1]


def test_config_validate_when_duplicate_agent_names_then_error_names_both(tmp_path: Path) -> None:
    # Arrange
    path = tmp_path / "engine.toml"
    block = '[[agents]]\nname = "sma"\npath = "plugins.sma_cross:SmaCrossAgent"\n\n'
    path.write_text(block * 2)
    # Act
    result = _cli("config", "validate", str(path))
    # Assert
    assert result.returncode == 2
    assert "agents[1].name" in result.stderr
    assert "Traceback" not in result.stderr


def test_config_schema_when_asked_then_prints_json_schema() -> None:
    # Arrange / Act
    result = _cli("config", "schema")
    # Assert
    assert result.returncode == 0
    schema = json.loads(result.stdout)
    assert "risk" in schema["properties"]


def test_contracts_schema_check_when_committed_schemas_current_then_exit_0() -> None:
    # Arrange / Act
    result = _cli("contracts", "schema", "--check")
    # Assert
    assert result.returncode == 0, result.stderr


def test_contracts_schema_when_dir_given_then_writes_every_contract(tmp_path: Path) -> None:
    # Arrange / Act
    result = _cli("contracts", "schema", "--dir", str(tmp_path))
    # Assert
    assert result.returncode == 0, result.stderr
    names = sorted(p.name for p in tmp_path.iterdir())
    assert "signal.v1.json" in names
    assert len(names) == len(ALL_CONTRACTS)


def test_run_when_live_requested_then_refused_with_clear_message() -> None:
    # Arrange / Act
    result = _cli("run", "--config", "engine.toml", "--live")
    # Assert
    assert result.returncode == 2
    assert "--live refused" in result.stderr
    assert "Traceback" not in result.stderr


def test_run_when_config_has_bad_agent_then_exit_2_without_traceback(tmp_path: Path) -> None:
    # Arrange
    path = tmp_path / "engine.toml"
    path.write_text('[[agents]]\nname = "ghost"\npath = "nowhere:Ghost"\n')
    # Act
    result = _cli("run", "--config", str(path), "--paper")
    # Assert
    assert result.returncode == 2
    assert "agents[0] (ghost): cannot import module 'nowhere'" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_run_when_signalled_then_agents_started_and_clean_shutdown(
    tmp_path: Path, signum: signal.Signals
) -> None:
    # Arrange
    path = tmp_path / "engine.toml"
    path.write_text(
        f'[engine]\nrun_dir = "{tmp_path}"\n\n[telemetry]\nlog_format = "json"\n\n'
        '[[agents]]\nname = "sma"\npath = "plugins.sma_cross:SmaCrossAgent"\n'
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "run", "--config", str(path), "--paper"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Act: wait (bounded) for the start-up line, then signal
        assert proc.stderr is not None
        started: dict[str, object] | None = None
        deadline = time.monotonic() + 60
        seen: list[str] = []
        while started is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            seen.append(line)
            record = json.loads(line)
            if record.get("event") == "engine started":
                started = record
        assert started is not None, seen
        proc.send_signal(signum)
        _, rest = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    # Assert
    assert proc.returncode == 0, rest
    assert started["agents"] == ["sma"]
    assert started["mode"] == "paper"
    events = [json.loads(ln)["event"] for ln in rest.splitlines() if ln.startswith("{")]
    assert "shutdown requested" in events
    assert events[-1] == "engine stopped"
    assert "Traceback" not in rest


def test_run_when_telemetry_settings_bad_then_every_problem_listed_and_exit_2(
    tmp_path: Path,
) -> None:
    # Arrange: an unknown log level, an unknown log component, an OTLP endpoint without scheme
    path = tmp_path / "engine.toml"
    path.write_text(
        '[telemetry]\nlog_level = "verbose"\ncomponent_levels = { pipelin = "debug" }\n'
        '[telemetry.tracing]\notlp_endpoint = "collector:4317"\n'
    )
    # Act
    result = _cli("run", "--config", str(path), "--paper")
    # Assert
    assert result.returncode == 2
    assert f"{path}:2: telemetry.log_level:" in result.stderr
    assert "telemetry.component_levels.pipelin: unknown log component" in result.stderr
    assert f"{path}:5: telemetry.tracing.otlp_endpoint: must look like http" in result.stderr
    assert "Traceback" not in result.stderr
