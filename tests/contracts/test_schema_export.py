"""The committed JSON Schemas match the models, and a change without a version bump is caught."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import pytest
from pydantic import Field

import contracts
from contracts import ALL_CONTRACTS, Contract, DecisionLog, Signal
from contracts.schema_export import (
    SCHEMA_VERSION_KEY,
    check_schemas,
    default_schema_dir,
    render,
    schema_file_name,
    schema_files,
    snake_case,
    write_schemas,
)


def _demo_v1() -> type[Contract]:
    class Demo(Contract):
        schema_version: Literal[1] = 1
        size: int

    return Demo


def _demo_v1_changed() -> type[Contract]:
    class Demo(Contract):
        schema_version: Literal[1] = 1
        size: int
        colour: str = Field(default="red")

    return Demo


def _demo_v2() -> type[Contract]:
    class Demo(Contract):
        schema_version: Literal[2] = 2
        size: int
        colour: str = Field(default="red")

    return Demo


def test_check_when_committed_schemas_read_then_they_match_the_models() -> None:
    # Arrange
    directory = default_schema_dir()

    # Act
    problems = check_schemas(directory)

    # Assert
    assert problems == [], "\n".join(problems)


def test_locate_when_default_dir_requested_then_it_is_inside_the_contracts_package() -> None:
    # Arrange
    package_dir = Path(contracts.__file__).resolve().parent

    # Act
    directory = default_schema_dir()

    # Assert
    assert directory == package_dir / "schemas"
    assert directory.is_dir()


def test_export_when_listing_files_then_one_per_contract_named_by_model_and_version() -> None:
    # Arrange
    expected = {f"{snake_case(m.__name__)}.v1.json" for m in ALL_CONTRACTS}

    # Act
    files = schema_files()

    # Assert
    assert set(files) == expected
    assert {"signal.v1.json", "decision_log.v1.json", "macro_observation.v1.json"} <= set(files)
    for model in ALL_CONTRACTS:
        schema = files[schema_file_name(model)]
        assert schema[SCHEMA_VERSION_KEY] == 1
        assert schema["title"] == model.__name__
        assert schema["additionalProperties"] is False


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Signal", "signal"),
        ("DecisionLog", "decision_log"),
        ("MacroObservation", "macro_observation"),
        ("OHLCBar", "ohlc_bar"),
    ],
)
def test_name_when_model_is_camel_case_then_file_stem_is_snake_case(
    name: str, expected: str
) -> None:
    # Arrange / Act
    stem = snake_case(name)

    # Assert
    assert stem == expected


def test_export_when_written_twice_then_bytes_are_identical_and_sorted(tmp_path: Path) -> None:
    # Arrange
    first_dir, second_dir = tmp_path / "a", tmp_path / "b"

    # Act
    first = write_schemas(first_dir)
    second = write_schemas(second_dir)

    # Assert
    assert [p.name for p in first] == [p.name for p in second]
    for a, b in zip(first, second, strict=True):
        assert a.read_bytes() == b.read_bytes()
        text = a.read_text(encoding="utf-8")
        assert text.endswith("}\n")
        assert "\r" not in text
        assert text == render(json.loads(text))
    assert check_schemas(first_dir) == []


def test_check_when_schema_file_differs_and_version_unchanged_then_asks_for_bump(
    tmp_path: Path,
) -> None:
    # Arrange
    write_schemas(tmp_path)
    path = tmp_path / "signal.v1.json"
    schema = json.loads(path.read_text(encoding="utf-8"))
    schema["properties"]["sigma"]["exclusiveMinimum"] = -1
    path.write_text(render(schema), encoding="utf-8")

    # Act
    problems = check_schemas(tmp_path)

    # Assert
    assert len(problems) == 1
    assert "Signal schema changed but schema_version is still 1" in problems[0]
    assert "bump" in problems[0]


def test_check_when_model_changes_without_version_bump_then_reports_model(
    tmp_path: Path,
) -> None:
    # Arrange
    write_schemas(tmp_path, (_demo_v1(),))
    changed = (_demo_v1_changed(),)

    # Act
    problems = check_schemas(tmp_path, changed)

    # Assert
    assert problems == [
        "Demo schema changed but schema_version is still 1: bump it and re-export with "
        f"`tradeengine contracts schema` ({tmp_path / 'demo.v1.json'} differs from the model)"
    ]


def test_check_when_version_bumped_then_missing_until_exported_and_old_file_is_history(
    tmp_path: Path,
) -> None:
    # Arrange
    write_schemas(tmp_path, (_demo_v1(),))
    bumped = (_demo_v2(),)

    # Act
    before_export = check_schemas(tmp_path, bumped)
    written = write_schemas(tmp_path, bumped)
    after_export = check_schemas(tmp_path, bumped)

    # Assert
    assert len(before_export) == 1
    assert "demo.v2.json is missing" in before_export[0]
    assert "`tradeengine contracts schema`" in before_export[0]
    assert [p.name for p in written] == ["demo.v2.json"]
    assert after_export == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo.v1.json", "demo.v2.json"]


def test_check_when_current_file_missing_then_tells_to_run_export(tmp_path: Path) -> None:
    # Arrange
    write_schemas(tmp_path)
    (tmp_path / "decision_log.v1.json").unlink()

    # Act
    problems = check_schemas(tmp_path)

    # Assert
    assert len(problems) == 1
    assert "decision_log.v1.json is missing" in problems[0]
    assert DecisionLog.__name__ in problems[0]
    assert "run `tradeengine contracts schema`" in problems[0]


def test_check_when_directory_is_empty_then_every_contract_is_reported(tmp_path: Path) -> None:
    # Arrange
    directory = tmp_path / "nothing"

    # Act
    problems = check_schemas(directory)

    # Assert
    assert len(problems) == len(ALL_CONTRACTS)
    assert all("is missing" in problem for problem in problems)


def test_check_when_file_is_not_json_then_reported(tmp_path: Path) -> None:
    # Arrange
    write_schemas(tmp_path)
    (tmp_path / "signal.v1.json").write_text("{not json", encoding="utf-8")

    # Act
    problems = check_schemas(tmp_path)

    # Assert
    assert len(problems) == 1
    assert "signal.v1.json cannot be read as JSON" in problems[0]


def test_check_when_only_formatting_differs_then_no_problem(tmp_path: Path) -> None:
    # Arrange
    write_schemas(tmp_path)
    path = tmp_path / "signal.v1.json"
    compact = json.dumps(json.loads(path.read_text(encoding="utf-8")))
    path.write_bytes(compact.encode() + b"\r\n")

    # Act
    problems = check_schemas(tmp_path)

    # Assert
    assert problems == []


def test_check_when_old_version_file_present_then_not_an_error(tmp_path: Path) -> None:
    # Arrange
    write_schemas(tmp_path)
    (tmp_path / "signal.v0.json").write_text('{"title": "Signal", "old": true}\n', "utf-8")

    # Act
    problems = check_schemas(tmp_path)

    # Assert
    assert problems == []


def test_export_when_schema_read_then_validation_rules_are_published() -> None:
    # Arrange
    schema = schema_files()["signal.v1.json"]

    # Act
    properties = schema["properties"]

    # Assert
    assert properties["sigma"]["exclusiveMinimum"] == 0
    assert (properties["confidence"]["minimum"], properties["confidence"]["maximum"]) == (0, 1)
    assert properties["trace_id"]["pattern"] == "^[0-9a-f]{32}$"
    assert properties["schema_version"]["const"] == 1
    assert set(schema["required"]) >= {"trace_id", "ts_event", "ts_init", "mu", "sigma"}
    assert Signal.model_json_schema()["title"] == schema["title"]
