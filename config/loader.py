"""Load engine.toml (plus environment overrides) into a validated `EngineConfig`.

Why this module exists: it is the single place where untrusted text becomes typed settings, and
the place that makes a bad config cheap to fix: every problem is reported at once, each with its
key path, the bad value and the line it is on.

Pipeline: parse TOML -> reject secrets written in the file -> apply ``TRADEENGINE__...``
environment overrides -> validate with pydantic -> translate errors into `ConfigProblem`s.

Trade-offs made:
- Environment values are parsed as TOML values (``5``, ``true``, ``[1, 2]``, ``"x"``) and fall
  back to the raw string. A string-typed field keeps the raw text when it parses as a non-string
  (``GROUP_ID=42`` is the text "42"); a secret always keeps the raw text, quotes and all.
- Overrides may create keys and tables, but not list items: an index past the end is an error
  rather than a silently padded list.
- Secrets come only from the environment. A secret found in the file is reported (without its
  value) and removed before validation, so the same key is not reported twice.
- Error messages append `` (got <value>)`` in TOML notation for pydantic's built-in errors; never
  for secret fields, whole tables, or this package's own errors (which word their values
  themselves, e.g. a Redis URL with its password masked).
- `ConfigError` is raised ``from None``: a chained pydantic `ValidationError` would print raw
  inputs, secrets included, in the traceback.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from config.errors import ConfigError, ConfigProblem
from config.locate import KeyPath, find_line, scan_key_lines
from config.models import (
    CUSTOM_ERROR_PREFIX,
    ENV_PREFIX,
    ENV_SEPARATOR,
    PROBLEMS_ERROR_TYPE,
    EngineConfig,
    env_var_name,
)
from config.paths import Resolved, prefers_raw_string, render_path, resolve

ENVIRONMENT_SOURCE = "<environment>"
"""`ConfigProblem.source` of an environment variable that cannot be applied at all."""

_SUGGESTION_CUTOFF = 0.7
"""difflib similarity needed to suggest a field name; lower suggests unrelated names."""

_MAX_VALUE_CHARS = 80

_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)|\s*\(at end of document\)")


def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> EngineConfig:
    """Load and validate the config file at `path`; `env` defaults to `os.environ`.

    Raises `ConfigError` listing every problem.
    """
    source = os.fspath(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        problem = ConfigProblem("", f"not valid UTF-8 (byte {exc.start})", None, source)
        raise ConfigError([problem]) from None
    except OSError as exc:
        problem = ConfigProblem("", f"cannot read config file: {exc.strerror or exc}", None, source)
        raise ConfigError([problem]) from None
    return load_config_text(text, source=source, env=env)


def load_config_text(
    text: str, *, source: str = "<string>", env: Mapping[str, str] | None = None
) -> EngineConfig:
    """Validate TOML `text`; `source` names it in messages. `env` defaults to `os.environ`.

    Raises `ConfigError` listing every problem.
    """
    environ: Mapping[str, str] = os.environ if env is None else env
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([_syntax_problem(exc, source)]) from None
    loader = _Loader(source, scan_key_lines(text), data)
    loader.reject_file_secrets()
    loader.apply_env(environ)
    config = loader.validate()
    if loader.problems or config is None:
        raise ConfigError(loader.sorted_problems()) from None
    return config


def _syntax_problem(exc: tomllib.TOMLDecodeError, source: str) -> ConfigProblem:
    message = str(exc)
    match = _TOML_POSITION.search(message)
    line: int | None = None
    if match is not None:
        message = message[: match.start()] + message[match.end() :]
        if match.group(1) is not None:
            line = int(match.group(1))
            message += f" (column {match.group(2)})"
    return ConfigProblem("", f"TOML syntax error: {message}", line, source)


class _Loader:
    """State of one load: the data being built, where values came from, problems so far."""

    def __init__(self, source: str, lines: dict[KeyPath, int], data: dict[str, Any]) -> None:
        self.source = source
        self.lines = lines
        self.data = data
        self.problems: list[ConfigProblem] = []
        self.env_origins: dict[KeyPath, str] = {}
        self.rejected_secrets: set[KeyPath] = set()

    # -- secrets -------------------------------------------------------------------------------

    def reject_file_secrets(self) -> None:
        self._reject_in(self.data, ())

    def _reject_in(self, node: Any, path: KeyPath) -> None:
        if isinstance(node, list):
            for index, item in enumerate(node):
                self._reject_in(item, (*path, index))
            return
        if not isinstance(node, dict):
            return
        for key in list(node):
            key_path = (*path, key)
            resolved = resolve(EngineConfig, key_path, self.data)
            if resolved.secret:
                del node[key]
                self.rejected_secrets.add(key_path)
                env = env_var_name(resolved.path)
                self.problems.append(
                    ConfigProblem(
                        render_path(resolved.path),
                        f"secrets must not be in the config file; set {env} instead",
                        find_line(self.lines, key_path),
                        self.source,
                    )
                )
            else:
                self._reject_in(node[key], key_path)

    # -- environment ---------------------------------------------------------------------------

    def apply_env(self, environ: Mapping[str, str]) -> None:
        prefix = ENV_PREFIX + ENV_SEPARATOR
        # Sorted, so `TRADEENGINE__AGENTS=[...]` applies before `TRADEENGINE__AGENTS__0__...`
        # and the outcome never depends on the environment's iteration order.
        for name in sorted(environ):
            if name.upper().startswith(prefix):
                error = self._apply_one(name, name[len(prefix) :].split(ENV_SEPARATOR), environ)
                if error is not None:
                    self.problems.append(
                        ConfigProblem(f"env:{name}", error, None, ENVIRONMENT_SOURCE)
                    )

    def _apply_one(self, name: str, segments: list[str], environ: Mapping[str, str]) -> str | None:
        """Set the value `name` addresses; return why it cannot be set, or None."""
        if not all(segments):
            return "empty key segment (a doubled or trailing '__')"
        keys = [segment.lower() for segment in segments]
        node: Any = self.data
        path: list[str | int] = []
        for depth, key in enumerate(keys):
            step: str | int
            if isinstance(node, list):
                if not key.isdigit():
                    return f"{render_path(path)} is a list; expected an item index, got {key!r}"
                step = int(key)
                if step >= len(node):
                    return f"{render_path(path)} has no item {step} (it has {len(node)})"
            elif isinstance(node, dict):
                step = key
                if depth + 1 < len(keys) and key not in node:
                    if keys[depth + 1].isdigit():
                        where = render_path([*path, key])
                        return f"{where} has no item {keys[depth + 1]} (it is not set)"
                    node[key] = {}
                    # Problems inside a table the environment created are the variable's fault.
                    self.env_origins.setdefault((*path, key), name)
            else:
                # The value in the way is not echoed: it may be a secret set by another variable.
                return f"{render_path(path)} is a single value, it has no key {key!r}"
            path.append(step)
            if depth + 1 == len(keys):
                node[step] = self._env_value(environ[name], tuple(path))
                self.env_origins[tuple(path)] = name
            else:
                node = node[step]
        return None

    def _env_value(self, raw: str, path: KeyPath) -> Any:
        resolved = resolve(EngineConfig, path, self.data)
        if resolved.secret:
            return raw  # a password is exactly the text given, quotes and all
        try:
            parsed = tomllib.loads(f"v = {raw}")
        except tomllib.TOMLDecodeError:
            return raw
        if parsed.keys() != {"v"}:
            return raw  # "5\nx = 1" parses, but it is not one value: keep the text as written
        value = parsed["v"]
        if prefers_raw_string(resolved.leaf) and not isinstance(value, str):
            return raw  # GROUP_ID=42 means the text "42" for a string field
        return value

    # -- validation ----------------------------------------------------------------------------

    def validate(self) -> EngineConfig | None:
        try:
            return EngineConfig.model_validate(self.data)
        except ValidationError as exc:
            for error in exc.errors(include_url=False):
                loc = tuple(error["loc"])
                if error["type"] == PROBLEMS_ERROR_TYPE:
                    for relative, message in error.get("ctx", {}).get("items", ()):
                        self._add(resolve(EngineConfig, loc + tuple(relative), self.data), message)
                else:
                    self._add_pydantic_error(error["type"], loc, error["msg"], error.get("input"))
            return None

    def _add_pydantic_error(self, kind: str, loc: KeyPath, message: str, value: Any) -> None:
        resolved = resolve(EngineConfig, loc, self.data)
        if kind == "extra_forbidden":
            message = _unknown_key_message(resolved)
        elif kind in ("union_tag_invalid", "union_tag_not_found"):
            resolved = resolve(EngineConfig, (*loc, "kind"), self.data)
        elif kind == "missing" and resolved.secret:
            message = f"required secret is missing; set {env_var_name(resolved.path)}"
        if (
            not kind.startswith(CUSTOM_ERROR_PREFIX)
            and kind not in ("missing", "extra_forbidden", "union_tag_invalid")
            and not resolved.secret
            and not isinstance(value, Mapping | BaseModel)
        ):
            message += f" (got {_render_value(value)})"
        self._add(resolved, message)

    def _add(self, resolved: Resolved, message: str) -> None:
        path = resolved.path
        if path in self.rejected_secrets:
            return  # already reported as "secret in the file"; its absence is a consequence
        origin = next(
            (
                self.env_origins[path[:n]]
                for n in range(len(path), 0, -1)
                if path[:n] in self.env_origins
            ),
            None,
        )
        if origin is not None:
            source, line = f"env:{origin}", None
        else:
            source, line = self.source, find_line(self.lines, path)
        self.problems.append(ConfigProblem(render_path(path), message, line, source))

    def sorted_problems(self) -> list[ConfigProblem]:
        """File problems in line order, then those without a line (stable otherwise)."""
        return sorted(self.problems, key=lambda p: (p.line is None, p.line or 0))


def _unknown_key_message(resolved: Resolved) -> str:
    key = resolved.path[-1] if resolved.path else ""
    if resolved.parent is not None and isinstance(key, str):
        close = difflib.get_close_matches(
            key, list(resolved.parent.model_fields), n=1, cutoff=_SUGGESTION_CUTOFF
        )
        if close:
            return f"unknown key (did you mean {close[0]!r}?)"
    return "unknown key"


def _render_value(value: Any) -> str:
    """A value in TOML notation, shortened: users wrote TOML, so show them TOML."""
    text = _toml_repr(value)
    if len(text) > _MAX_VALUE_CHARS:
        text = text[: _MAX_VALUE_CHARS - 3] + "..."
    return text


def _toml_repr(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, date | datetime | time):
        return value.isoformat()
    if isinstance(value, Sequence):
        return "[" + ", ".join(_toml_repr(item) for item in value) + "]"
    if isinstance(value, Mapping):
        return "{...}"
    return repr(value)
