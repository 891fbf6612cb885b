"""Secrets come only from the environment and never show up in any output."""

from __future__ import annotations

import traceback

import pytest
from pydantic import SecretStr

from config import ConfigError, EngineConfig, PolygonSourceConfig, load_config_text

PASSWORD = "hunter2-S3cr3t-value"
API_KEY = "pk_live_0123456789abcdef"

REDIS_AND_POLYGON = """
[feature_store]
backend = "redis"

[[sources]]
kind = "polygon"
name = "poly"
symbols = ["AAPL"]
"""

SECRET_ENV = {
    "TRADEENGINE__FEATURE_STORE__REDIS__PASSWORD": PASSWORD,
    "TRADEENGINE__SOURCES__0__API_KEY": API_KEY,
}


def _load_error(text: str, env: dict[str, str]) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_config_text(text, source="engine.toml", env=env)
    return caught.value


def _all_text_of(error: ConfigError) -> str:
    """Everything a user or a log could see of the error, traceback included."""
    formatted = "".join(traceback.format_exception(error))
    return "\n".join([str(error), repr(error), error.format(), repr(error.problems), formatted])


def test_load_when_secret_in_file_then_rejected_without_echoing_value() -> None:
    # Arrange
    text = f'[feature_store.redis]\nurl = "redis://h:6379/0"\npassword = "{PASSWORD}"\n'

    # Act
    error = _load_error(text, env={})

    # Assert
    assert [(p.path, p.message, p.line) for p in error.problems] == [
        (
            "feature_store.redis.password",
            "secrets must not be in the config file; "
            "set TRADEENGINE__FEATURE_STORE__REDIS__PASSWORD instead",
            3,
        )
    ]
    assert PASSWORD not in _all_text_of(error)


def test_load_when_secret_in_file_and_in_env_then_still_rejected() -> None:
    # Arrange: the env value being right does not make the file's copy acceptable.
    text = f'[feature_store.redis]\npassword = "{PASSWORD}"\n'

    # Act
    error = _load_error(text, env={"TRADEENGINE__FEATURE_STORE__REDIS__PASSWORD": "other"})

    # Assert
    assert [p.path for p in error.problems] == ["feature_store.redis.password"]


def test_load_when_source_api_key_in_file_then_rejected_once_naming_indexed_env_var() -> None:
    # Arrange: the removed key must not also be reported as "missing".
    text = REDIS_AND_POLYGON + f'api_key = "{API_KEY}"\n'

    # Act
    error = _load_error(text, env={})

    # Assert
    assert [(p.path, p.line) for p in error.problems] == [("sources[0].api_key", 9)]
    assert "TRADEENGINE__SOURCES__0__API_KEY" in error.problems[0].message
    assert API_KEY not in _all_text_of(error)


def test_load_when_required_secret_missing_then_problem_names_env_var() -> None:
    # Arrange
    text = REDIS_AND_POLYGON

    # Act
    error = _load_error(text, env={})

    # Assert
    assert [p.path for p in error.problems] == ["sources[0].api_key"]
    assert "TRADEENGINE__SOURCES__0__API_KEY" in error.problems[0].message


def test_load_when_secrets_from_env_then_typed_secretstr_with_exact_values() -> None:
    # Arrange
    env = {**SECRET_ENV, "TRADEENGINE__SOURCES__0__API_KEY": "12345"}

    # Act
    config = load_config_text(REDIS_AND_POLYGON, env=env)

    # Assert: a numeric-looking secret stays the exact text, not a TOML integer.
    password = config.feature_store.redis.password
    source = config.sources[0]
    assert isinstance(password, SecretStr)
    assert password.get_secret_value() == PASSWORD
    assert isinstance(source, PolygonSourceConfig)
    assert source.api_key.get_secret_value() == "12345"


def test_outputs_when_secrets_from_env_then_redacted_in_repr_str_json_and_hash_input() -> None:
    # Arrange
    config = load_config_text(REDIS_AND_POLYGON, env=SECRET_ENV)

    # Act
    outputs = {
        "repr": repr(config),
        "str": str(config),
        "json": config.model_dump_json(),
        "hash input": config.canonical_json(),
        "schema-mode dump": str(config.model_dump(mode="json")),
    }

    # Assert
    for name, text in outputs.items():
        assert PASSWORD not in text, name
        assert API_KEY not in text, name


def test_load_when_secrets_from_env_and_other_field_wrong_then_error_text_has_no_secret() -> None:
    # Arrange: errors in the tables holding the secrets, so pydantic sees them as inputs.
    text = REDIS_AND_POLYGON.replace('backend = "redis"', 'backend = "redis"\nnamespace = ""')
    text += "poll_interval_s = -1\n[kafka]\nenabled = true\nsasl_mechanism = 'PLAIN'\n"
    env = {**SECRET_ENV, "TRADEENGINE__KAFKA__SASL_PASSWORD": PASSWORD}

    # Act
    error = _load_error(text, env=env)

    # Assert
    paths = {p.path for p in error.problems}
    assert {"feature_store.namespace", "sources[0].poll_interval_s"} <= paths
    assert "kafka.security_protocol" in paths
    everything = _all_text_of(error)
    assert PASSWORD not in everything
    assert API_KEY not in everything


def test_load_when_secret_from_env_has_wrong_type_then_message_has_no_value() -> None:
    # Arrange: an empty required secret fails min_length; its value must not be appended.
    env = {**SECRET_ENV, "TRADEENGINE__SOURCES__0__API_KEY": ""}

    # Act
    error = _load_error(REDIS_AND_POLYGON, env=env)

    # Assert
    assert [p.path for p in error.problems] == ["sources[0].api_key"]
    assert "(got" not in error.problems[0].message


def test_hash_when_only_secrets_differ_or_are_absent_then_equal() -> None:
    # Arrange
    with_secrets = load_config_text(REDIS_AND_POLYGON, env=SECRET_ENV)
    other_secrets = load_config_text(
        REDIS_AND_POLYGON,
        env={
            "TRADEENGINE__FEATURE_STORE__REDIS__PASSWORD": "different",
            "TRADEENGINE__SOURCES__0__API_KEY": "different",
        },
    )
    without_password = load_config_text(
        REDIS_AND_POLYGON, env={"TRADEENGINE__SOURCES__0__API_KEY": API_KEY}
    )

    # Act
    hashes = {c.config_hash() for c in (with_secrets, other_secrets, without_password)}

    # Assert
    assert len(hashes) == 1


def test_load_when_redis_url_embeds_password_then_rejected_without_the_password() -> None:
    # Arrange
    text = f'[feature_store.redis]\nurl = "redis://engine:{PASSWORD}@cache.local:6380/2"\n'

    # Act
    error = _load_error(text, env={})

    # Assert
    (problem,) = error.problems
    assert (problem.path, problem.line) == ("feature_store.redis.url", 2)
    assert "TRADEENGINE__FEATURE_STORE__REDIS__PASSWORD" in problem.message
    assert "redis://engine:***@cache.local:6380/2" in problem.message
    assert PASSWORD not in _all_text_of(error)


def test_load_when_redis_url_has_username_only_then_accepted() -> None:
    # Arrange
    text = '[feature_store.redis]\nurl = "rediss://engine@cache.local:6380/2"\n'

    # Act
    config = load_config_text(text, env={})

    # Assert
    assert config.feature_store.redis.url == "rediss://engine@cache.local:6380/2"


def test_schema_when_generated_then_secret_fields_marked_secret_and_write_only() -> None:
    # Arrange
    schema = EngineConfig.model_json_schema()

    # Act
    redis_password = schema["$defs"]["RedisConfig"]["properties"]["password"]

    # Assert
    assert redis_password["secret"] is True
    assert any(option.get("writeOnly") for option in redis_password["anyOf"])


@pytest.mark.parametrize(
    "url",
    [
        f"redis://cache.local:6380/2?password={PASSWORD}",
        f"redis://:{PASSWORD}#x@cache.local:6380/2",  # an unescaped "#" hides the user info
    ],
)
def test_load_when_redis_url_hides_a_password_elsewhere_then_rejected_without_it(
    url: str,
) -> None:
    # Act
    error = _load_error(f'[feature_store.redis]\nurl = "{url}"\n', env={})
    # Assert
    (problem,) = error.problems
    assert problem.path == "feature_store.redis.url"
    assert "TRADEENGINE__FEATURE_STORE__REDIS__PASSWORD" in problem.message
    assert PASSWORD not in _all_text_of(error)
