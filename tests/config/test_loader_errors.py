"""Error reporting of the loader: all problems at once, with key paths, values and lines."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from config import ConfigError, ConfigProblem, load_config, load_config_text

THREE_MISTAKES = """\
# a config with three independent mistakes
[risk]
max_weight = 0.2
max_positions = "five"

[selector]
top_kk = 3

[telemetry.tracing]
enabled = true
sampling_ratio = 1.5
"""


def _problems(text: str, env: dict[str, str] | None = None) -> list[ConfigProblem]:
    with pytest.raises(ConfigError) as caught:
        load_config_text(text, source="engine.toml", env=env or {})
    return caught.value.problems


def test_load_when_three_independent_mistakes_then_all_three_reported_with_paths_and_lines() -> (
    None
):
    # Arrange
    text = THREE_MISTAKES

    # Act
    problems = _problems(text)

    # Assert
    found = {(p.path, p.line) for p in problems}
    assert found == {
        ("risk.max_positions", 4),
        ("selector.top_kk", 7),
        ("telemetry.tracing.sampling_ratio", 11),
    }
    assert all(p.source == "engine.toml" for p in problems)


def test_format_when_three_mistakes_then_one_line_per_problem_naming_the_bad_values() -> None:
    # Arrange
    with pytest.raises(ConfigError) as caught:
        load_config_text(THREE_MISTAKES, source="engine.toml", env={})

    # Act
    lines = caught.value.format().splitlines()

    # Assert
    assert lines == [
        "engine.toml:4: risk.max_positions: Input should be a valid integer, unable to parse "
        'string as an integer (got "five")',
        "engine.toml:7: selector.top_kk: unknown key (did you mean 'top_k'?)",
        "engine.toml:11: telemetry.tracing.sampling_ratio: Input should be less than or equal "
        "to 1 (got 1.5)",
    ]
    assert str(caught.value).startswith("invalid configuration (3 problems):")


def test_load_when_value_out_of_range_then_message_matches_documented_format() -> None:
    # Arrange
    text = "\n" * 11 + "risk.max_positions = -3\n"

    # Act
    problems = _problems(text)

    # Assert
    assert [p.format() for p in problems] == [
        "engine.toml:12: risk.max_positions: Input should be greater than 0 (got -3)"
    ]


def test_load_when_key_misspelled_then_did_you_mean_suggests_the_field() -> None:
    # Arrange
    text = "[risk]\nmax_postions = 3\n"

    # Act
    problems = _problems(text)

    # Assert
    assert [(p.path, p.message, p.line) for p in problems] == [
        ("risk.max_postions", "unknown key (did you mean 'max_positions'?)", 2)
    ]


def test_load_when_unknown_key_resembles_no_field_then_no_suggestion() -> None:
    # Arrange
    text = "[risk]\nbanana = 3\n"

    # Act
    problems = _problems(text)

    # Assert
    assert [(p.path, p.message) for p in problems] == [("risk.banana", "unknown key")]


def test_load_when_section_name_misspelled_then_suggests_the_section() -> None:
    # Arrange
    text = "[telemetri]\nlog_level = 'debug'\n"

    # Act
    problems = _problems(text)

    # Assert
    assert [(p.path, p.message, p.line) for p in problems] == [
        ("telemetri", "unknown key (did you mean 'telemetry'?)", 1)
    ]


def test_load_when_unknown_key_in_source_then_suggestion_uses_that_kinds_fields() -> None:
    # Arrange: `path` is close to the replay source's `paths`; the union tag is not in the path.
    text = '[[sources]]\nkind = "replay"\nname = "r"\npaths = ["a.csv"]\npath = "b.csv"\n'

    # Act
    problems = _problems(text)

    # Assert
    assert [(p.path, p.message, p.line) for p in problems] == [
        ("sources[0].path", "unknown key (did you mean 'paths'?)", 5)
    ]


def test_load_when_toml_syntax_error_then_one_problem_with_tomllib_line() -> None:
    # Arrange
    text = "[risk]\nmax_positions = 5\nmax_weight = = 0.3\n"

    # Act
    problems = _problems(text)

    # Assert
    assert len(problems) == 1
    assert problems[0].line == 3
    assert problems[0].path == ""
    assert problems[0].message.startswith("TOML syntax error: ")
    assert problems[0].format().startswith("engine.toml:3: TOML syntax error: ")


def test_load_when_source_kind_unknown_then_problem_points_at_kind_line() -> None:
    # Arrange
    text = '[[sources]]\nname = "x"\nkind = "ftp"\n'

    # Act
    problems = _problems(text)

    # Assert
    assert [(p.path, p.line) for p in problems] == [("sources[0].kind", 3)]
    assert "'ftp'" in problems[0].message


def test_load_when_required_field_missing_then_line_of_enclosing_table() -> None:
    # Arrange
    text = '[engine]\nseed = 1\n\n[[sources]]\nkind = "replay"\nname = "r"\n'

    # Act
    problems = _problems(text)

    # Assert
    assert [(p.path, p.message, p.line) for p in problems] == [
        ("sources[0].paths", "Field required", 4)
    ]


def test_load_when_table_given_a_scalar_then_type_problem_names_the_value() -> None:
    # Arrange
    text = "risk = 5\n"

    # Act
    problems = _problems(text)

    # Assert
    assert [(p.path, p.line) for p in problems] == [("risk", 1)]
    assert problems[0].message.endswith("(got 5)")


def test_load_config_when_file_missing_then_config_error_names_the_file(tmp_path: Path) -> None:
    # Arrange
    missing = tmp_path / "nope.toml"

    # Act
    with pytest.raises(ConfigError) as caught:
        load_config(missing, env={})

    # Assert
    (problem,) = caught.value.problems
    assert problem.source == str(missing)
    assert "cannot read config file" in problem.message


def test_load_config_when_file_has_mistake_then_source_is_the_path_as_given(
    tmp_path: Path,
) -> None:
    # Arrange
    path = tmp_path / "engine.toml"
    path.write_text("[bus]\ndefault_capacity = 0\n", encoding="utf-8")

    # Act
    with pytest.raises(ConfigError) as caught:
        load_config(str(path), env={})

    # Assert
    assert caught.value.format() == (
        f"{path}:2: bus.default_capacity: Input should be greater than 0 (got 0)"
    )


def test_load_when_env_is_none_then_os_environ_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    # Arrange
    monkeypatch.setenv("TRADEENGINE__RISK__MAX_POSITIONS", "7")

    # Act
    config = load_config_text("")

    # Assert
    assert config.risk.max_positions == 7


def test_pickle_when_config_error_round_trips_then_problems_preserved() -> None:
    # Arrange
    with pytest.raises(ConfigError) as caught:
        load_config_text(THREE_MISTAKES, source="engine.toml", env={})

    # Act
    restored = pickle.loads(pickle.dumps(caught.value))

    # Assert
    assert restored.problems == caught.value.problems
    assert restored.format() == caught.value.format()
