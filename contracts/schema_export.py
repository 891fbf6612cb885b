"""Export the JSON Schemas of all contracts, and check the committed ones against the models.

Each model's schema is written to `<snake_case_model>.v<schema_version>.json` (e.g.
`signal.v1.json`, `decision_log.v1.json`). The files are the published form of the contracts:
a consumer in another language (or a Kafka schema registry) reads them, so a change to a model
must come with a new `schema_version`, and the old file stays committed as history.

`check_schemas` is what enforces that: for every model it compares the file of the model's
*current* version with the schema the model produces now. Files of older versions are not
checked (they describe history); a file of the current version that differs means the model was
changed without a version bump. Files are compared as parsed JSON, so a checkout that rewrote
line endings is not reported as a schema change.

The CLI command `tradeengine contracts schema [--dir D] [--check]` is a thin wrapper over
:func:`write_schemas` and :func:`check_schemas`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from contracts import ALL_CONTRACTS
from contracts.base import Contract

SCHEMA_VERSION_KEY = "x-schema-version"
EXPORT_COMMAND = "tradeengine contracts schema"

_WORD_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def default_schema_dir() -> Path:
    """The `contracts/schemas` directory shipped inside the package."""
    return Path(__file__).resolve().parent / "schemas"


def snake_case(name: str) -> str:
    """`DecisionLog` -> `decision_log`, `OHLCBar` -> `ohlc_bar`."""
    return _WORD_BOUNDARY.sub("_", name).lower()


def schema_version(model: type[Contract]) -> int:
    """The model's declared `schema_version` (the default of its `Literal[N]` field)."""
    field = model.model_fields.get("schema_version")
    version = None if field is None else field.default
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise TypeError(
            f"{model.__name__} must declare `schema_version: Literal[N] = N` with N >= 1"
        )
    return version


def schema_file_name(model: type[Contract]) -> str:
    return f"{snake_case(model.__name__)}.v{schema_version(model)}.json"


def model_schema(model: type[Contract]) -> dict[str, Any]:
    """The model's JSON Schema (validation mode) with its version under `x-schema-version`."""
    schema = model.model_json_schema(mode="validation")
    schema[SCHEMA_VERSION_KEY] = schema_version(model)
    return schema


def render(schema: dict[str, Any]) -> str:
    """The exact text written to a schema file (deterministic: sorted keys, trailing newline)."""
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def schema_files(
    models: tuple[type[Contract], ...] = ALL_CONTRACTS,
) -> dict[str, dict[str, Any]]:
    """File name -> JSON Schema, for every contract model."""
    files: dict[str, dict[str, Any]] = {}
    for model in models:
        name = schema_file_name(model)
        if name in files:
            raise ValueError(f"two contracts map to the same schema file {name}")
        files[name] = model_schema(model)
    return files


def write_schemas(
    directory: Path, models: tuple[type[Contract], ...] = ALL_CONTRACTS
) -> list[Path]:
    """Write the current schema of every model into `directory`; returns the paths written.

    Files of other (older) versions already in the directory are left untouched.
    """
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for name, schema in schema_files(models).items():
        path = directory / name
        path.write_text(render(schema), encoding="utf-8", newline="\n")
        written.append(path)
    return written


def check_schemas(directory: Path, models: tuple[type[Contract], ...] = ALL_CONTRACTS) -> list[str]:
    """Human-readable problems with the committed schemas in `directory`; empty when all match."""
    problems: list[str] = []
    for model in models:
        name = schema_file_name(model)
        version = schema_version(model)
        path = directory / name
        if not path.is_file():
            problems.append(
                f"{path} is missing: the schema of {model.__name__} v{version} has not been "
                f"exported; run `{EXPORT_COMMAND}`"
            )
            continue
        try:
            committed = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            problems.append(f"{path} cannot be read as JSON ({exc}); run `{EXPORT_COMMAND}`")
            continue
        if committed != model_schema(model):
            problems.append(
                f"{model.__name__} schema changed but schema_version is still {version}: "
                f"bump it and re-export with `{EXPORT_COMMAND}` ({path} differs from the model)"
            )
    return problems


__all__ = [
    "SCHEMA_VERSION_KEY",
    "check_schemas",
    "default_schema_dir",
    "model_schema",
    "render",
    "schema_file_name",
    "schema_files",
    "schema_version",
    "snake_case",
    "write_schemas",
]
