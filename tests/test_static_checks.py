"""The typing and lint standards are part of the test suite, so CI enforces them.

`mypy --strict` covers engine, contracts and config (configured in pyproject.toml); ruff covers
the whole tree, lint and formatting.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )


def test_mypy_when_run_strict_on_engine_contracts_config_then_clean() -> None:
    # Arrange / Act
    result = _run("mypy")
    # Assert
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_when_linting_tree_then_clean() -> None:
    # Arrange / Act
    result = _run("ruff", "check", ".")
    # Assert
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_when_checking_tree_then_already_formatted() -> None:
    # Arrange / Act
    result = _run("ruff", "format", "--check", ".")
    # Assert
    assert result.returncode == 0, result.stdout + result.stderr
