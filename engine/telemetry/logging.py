"""Structured logging: one structlog set-up, chosen by the composition root.

Components receive a bound logger (`get_logger(component)`) instead of calling
`structlog.get_logger()` themselves, so every record carries ``component`` and tests can capture
logs per component; the composition root decides format, levels and redaction once per process.

Trade-offs made:
- Per-component levels are a processor, not one logger per component: the bound loggers stay
  the cheap filtering loggers of structlog (calls below the lowest configured level cost one
  no-op method call), and only records at or above that level pay for the component lookup.
  A key ``agent.<name>`` sets the level of one agent; ``agent`` sets it for all of them.
- Secrets are redacted twice: config secrets are `SecretStr` (repr and dumps mask them), and
  the renderer's input is scrubbed of every known secret value, so a secret that reaches a log
  through an exception message or a URL is still masked. Exact-value scrubbing cannot catch a
  transformed secret (e.g. base64 of it); nothing here logs those.
- Standard-library logging (aiohttp, the OpenTelemetry SDK, asyncio) is bridged into the same
  pipeline at WARNING and above, under component ``library``, so stderr stays JSON lines.
- ``span_id`` is looked up from the trace id a record already carries (the contracts' W3C trace
  ids), because the engine's spans are not "current" OTel spans on the hot path.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal, TextIO

import structlog
from structlog.typing import EventDict, FilteringBoundLogger, Processor, WrappedLogger

Logger = FilteringBoundLogger

REDACTED = "**********"

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "exception": logging.ERROR,
    "critical": logging.CRITICAL,
}

SpanLookup = Callable[[str], "str | None"]


class _ComponentLevels:
    """Drops records below their component's level (see the module docstring)."""

    def __init__(self, default: int, overrides: Mapping[str, int]) -> None:
        self._default = default
        self._overrides = dict(overrides)
        self._agent_overrides = any(key.startswith("agent.") for key in overrides)

    def __call__(self, _logger: WrappedLogger, method: str, event: EventDict) -> EventDict:
        level = _LEVELS.get(method, logging.INFO)
        component = event.get("component")
        threshold = self._default
        if component is not None and self._overrides:
            if self._agent_overrides and component == "agent" and "agent" in event:
                specific = self._overrides.get(f"agent.{event['agent']}")
                if specific is not None:
                    threshold = specific
                else:
                    threshold = self._overrides.get(component, self._default)
            else:
                threshold = self._overrides.get(component, self._default)
        if level < threshold:
            raise structlog.DropEvent
        return event


class _SecretScrubber:
    """Replaces every occurrence of a known secret value in the record's strings."""

    def __init__(self, secrets: Iterable[str]) -> None:
        # Longest first, so a secret containing another is masked whole.
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def _scrub(self, value: Any) -> Any:
        if isinstance(value, str):
            for secret in self._secrets:
                if secret in value:
                    value = value.replace(secret, REDACTED)
            return value
        if isinstance(value, dict):
            return {k: self._scrub(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self._scrub(v) for v in value)
        if isinstance(value, int | float | bool) or value is None:
            return value
        return self._scrub(str(value))

    def __call__(self, _logger: WrappedLogger, _method: str, event: EventDict) -> EventDict:
        if not self._secrets:
            return event
        return {key: self._scrub(value) for key, value in event.items()}


class _StdlibBridge(logging.Handler):
    """Sends standard-library log records (aiohttp, the OpenTelemetry SDK, asyncio) through
    structlog, so every line the process writes has the same format and redaction."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            log = get_logger("library").bind(logger=record.name)
            message = record.getMessage()
            if record.exc_info:
                log.log(record.levelno, message, exc_info=record.exc_info)
            else:
                log.log(record.levelno, message)
        except Exception:  # a log line must never break the caller
            self.handleError(record)


def _bridge_stdlib_logging() -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _StdlibBridge):
            root.removeHandler(handler)
    root.addHandler(_StdlibBridge())
    if root.level == logging.NOTSET or root.level > logging.WARNING:
        root.setLevel(logging.WARNING)


def redactor(secrets: Iterable[str]) -> Callable[[str], str]:
    """A function masking every known secret value in a string (for text served outside logs,
    such as health reasons)."""
    scrubber = _SecretScrubber(secrets)

    def redact(text: str) -> str:
        result: str = scrubber._scrub(text)
        return result

    return redact


def _add_span_id(lookup: SpanLookup) -> Processor:
    def processor(_logger: WrappedLogger, _method: str, event: EventDict) -> EventDict:
        trace_id = event.get("trace_id")
        if trace_id and "span_id" not in event:
            span_id = lookup(str(trace_id))
            if span_id is not None:
                event["span_id"] = span_id
        return event

    return processor


def configure_logging(
    level: str = "info",
    fmt: Literal["auto", "json", "console"] = "auto",
    *,
    component_levels: Mapping[str, str] | None = None,
    secrets: Iterable[str] = (),
    span_lookup: SpanLookup | None = None,
    stream: TextIO | None = None,
) -> None:
    """Configure structlog once, from the composition root.

    JSON lines when not on a terminal (or when asked), human-readable console output otherwise.
    Logs go to stderr (or `stream`) so stdout stays free for command output.
    An unknown level is a `ValueError` naming it (config validation normally catches it first).
    """
    levels = {"<default>": level, **(component_levels or {})}
    unknown = {k: v for k, v in levels.items() if v not in _LEVELS}
    if unknown:
        raise ValueError(
            "unknown log level(s): "
            + ", ".join(f"{k}={v!r}" for k, v in unknown.items())
            + "; use debug, info, warning or error"
        )
    out = stream if stream is not None else sys.stderr
    is_tty = bool(getattr(out, "isatty", lambda: False)())
    use_json = fmt == "json" or (fmt == "auto" and not is_tty)
    renderer: Processor = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=is_tty)
    )
    overrides = {k: _LEVELS[v] for k, v in (component_levels or {}).items()}
    default = _LEVELS[level]
    processors: list[Processor] = [structlog.contextvars.merge_contextvars]
    if overrides:
        processors.append(_ComponentLevels(default, overrides))
    processors += [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if span_lookup is not None:
        processors.append(_add_span_id(span_lookup))
    processors += [
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
        _SecretScrubber(secrets),
        renderer,
    ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(min([default, *overrides.values()])),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    _bridge_stdlib_logging()


def get_logger(component: str) -> Logger:
    """A logger bound to a component name (the composition root hands these out)."""
    logger: Logger = structlog.get_logger().bind(component=component)
    return logger
