"""Typed settings of the whole engine: one frozen pydantic model per engine.toml table.

Why this module exists: every component reads its settings from here, already validated, so no
component parses strings or re-checks ranges, and `engine.toml` has a JSON Schema for editors.

Trade-offs made:
- Every model is frozen and forbids unknown keys: a typo is an error at start-up, not a silently
  ignored setting, and a config cannot change under a running engine. List and dict fields stay
  `list`/`dict` (not tuples) because that is what TOML produces and what readers expect; treat
  them as read-only.
- Every section has production defaults, so an empty file is a valid config; only what differs
  from the defaults needs to be written down.
- Lax (not strict) pydantic mode: TOML already types its values, and lax mode is what turns a TOML
  string into a `Path`, an enum or a `date`. NaN and infinity are rejected everywhere.
- Secrets are `SecretStr` fields (see :func:`is_secret_field`). They are redacted by repr, str and
  JSON dumps; the loader accepts them only from environment variables.
- Cross-field checks raise one error type, ``config_problems``, whose context carries the key
  paths (relative to the model) and messages. That lets one validator report several problems
  (every duplicate name, not just the first) and point at the exact field rather than the
  enclosing table; the loader expands it, and a direct `ValidationError` still reads well.
- Relative paths (`run_dir`, replay files, CA files) are kept as written; the engine resolves
  them against its working directory. Resolving them here would make the config hash depend on
  where the checkout lives.
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import json
import re
from collections.abc import Iterable
from datetime import date, time
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import parse_qs, urlsplit, urlunsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails, InitErrorDetails, PydanticCustomError

from config.enums import ClockKind, OverflowPolicy, TradingMode
from contracts import Horizon

ENV_PREFIX = "TRADEENGINE"
"""Environment variables overriding settings are named ``TRADEENGINE__SECTION__KEY...``."""

ENV_SEPARATOR = "__"

PROBLEMS_ERROR_TYPE = "config_problems"
"""Error type of cross-field problems; ``ctx["items"]`` holds ``((relative_loc, message), ...)``."""

CUSTOM_ERROR_PREFIX = "config_"
"""Errors raised by this package carry complete messages; the loader adds nothing to them."""

AGENT_NAME_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"
IMPORT_PATH_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$"
CURRENCY_PATTERN = r"^[A-Z]{3}$"
KAFKA_TOPIC_PATTERN = r"^[A-Za-z0-9._-]{1,249}$"

_SECRET_SCHEMA: dict[str, Any] = {"secret": True, "envOnly": True}
"""JSON Schema marker of a secret: editors and doc generators can tell users to use the env."""

Loc = tuple[str | int, ...]


def env_var_name(path: Iterable[str | int]) -> str:
    """The environment variable that sets the value at `path`, e.g. ``TRADEENGINE__RISK__X``."""
    return ENV_SEPARATOR.join([ENV_PREFIX, *(str(part).upper() for part in path)])


def is_secret_field(field: FieldInfo) -> bool:
    """True for fields that hold a secret: typed `SecretStr` or marked ``secret`` in the schema.

    Detection by type as well as by marker means a `SecretStr` field added later is env-only
    and redacted without anyone remembering the marker.
    """
    extra = field.json_schema_extra
    if isinstance(extra, dict) and extra.get("secret") is True:
        return True
    return _mentions_secret_type(field.annotation)


def _mentions_secret_type(annotation: Any) -> bool:
    if annotation is SecretStr:
        return True
    return any(_mentions_secret_type(arg) for arg in getattr(annotation, "__args__", ()))


def problems(*items: tuple[Loc, str]) -> PydanticCustomError:
    """Build the error that reports one or more problems at paths relative to the model."""
    # The template must not contain "{items}": pydantic substitutes context keys into it.
    text = "; ".join(f"{'.'.join(map(str, loc)) or '<self>'}: {msg}" for loc, msg in items)
    return PydanticCustomError(PROBLEMS_ERROR_TYPE, text, {"items": tuple(items)})


def _duplicates(names: list[str | None], what: str) -> list[tuple[Loc, str]]:
    """One problem per repeated name, each naming the index of the first use."""
    first_index: dict[str, int] = {}
    found: list[tuple[Loc, str]] = []
    for index, name in enumerate(names):
        if name is None:
            continue
        if name in first_index:
            found.append(
                (
                    (index, "name"),
                    f"duplicate {what} name {name!r} "
                    f"(already used by {what}s[{first_index[name]}])",
                )
            )
        else:
            first_index[name] = index
    return found


def _validate_unique_names(value: Any, handler: ValidatorFunctionWrapHandler, what: str) -> Any:
    """Validate a list of named tables and report duplicate names even when items are invalid.

    A wrap validator looks at the raw names, so one load reports a duplicate name together with
    the other problems of the list instead of only after they are fixed.
    """
    raw = value if isinstance(value, list) else []
    names = [
        item.get("name") if isinstance(item, dict) else getattr(item, "name", None) for item in raw
    ]
    duplicates = _duplicates([name if isinstance(name, str) else None for name in names], what)
    try:
        validated = handler(value)
    except ValidationError as exc:
        if not duplicates:
            raise
        merged: list[InitErrorDetails] = [_as_init_error(error) for error in exc.errors()]
        merged += [
            InitErrorDetails(type=problems(((), message)), loc=loc, input=None)
            for loc, message in duplicates
        ]
        raise ValidationError.from_exception_data(exc.title, merged) from None
    if duplicates:
        raise problems(*duplicates)
    return validated


def _as_init_error(error: ErrorDetails) -> InitErrorDetails:
    """Turn a reported error back into one that can be raised again (custom types rebuilt)."""
    kind: str | PydanticCustomError = error["type"]
    if error["type"].startswith(CUSTOM_ERROR_PREFIX):
        kind = PydanticCustomError(error["type"], error["msg"], error.get("ctx"))
    details = InitErrorDetails(type=kind, loc=error["loc"], input=error["input"])
    if "ctx" in error and not isinstance(kind, PydanticCustomError):
        details["ctx"] = error["ctx"]
    return details


def _check_pattern(value: str, pattern: str, what: str) -> str:
    if re.fullmatch(pattern, value) is None:
        raise PydanticCustomError("config_pattern", f"{what} (got {json.dumps(value)})")
    return value


class ConfigModel(BaseModel):
    """Base of every settings model: frozen, unknown keys rejected, finite floats only."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        allow_inf_nan=False,
        # Attribute docstrings become field descriptions in the JSON Schema.
        use_attribute_docstrings=True,
    )


# --------------------------------------------------------------------------------------- engine


class EngineSectionConfig(ConfigModel):
    """The ``[engine]`` table: identity of the run, trading mode, clock and determinism."""

    name: str = Field(default="tradeengine", min_length=1)
    """Name of this engine instance; appears in logs, metrics and the journal."""
    mode: TradingMode = TradingMode.PAPER
    """Where orders go: ``paper`` (simulated fills) or ``live``."""
    clock: ClockKind = ClockKind.REPLAY
    """Where time comes from: the replayed data (``replay``) or the wall clock (``live``)."""
    seed: int = Field(default=0, ge=0)
    """Seed of every random generator (ids, fill model); same seed + data = same decisions."""
    run_dir: Path = Path("runs")
    """Directory for the journal, decision logs and other artefacts of a run."""

    @model_validator(mode="after")
    def _live_trading_needs_live_clock(self) -> EngineSectionConfig:
        # Live orders timestamped by a replay clock would be nonsense; paper trading on either
        # clock is fine (paper on live data is the usual dress rehearsal).
        if self.mode is TradingMode.LIVE and self.clock is not ClockKind.LIVE:
            raise problems(
                (("clock",), f"mode = 'live' requires clock = 'live' (got {self.clock.value!r})")
            )
        return self


# ------------------------------------------------------------------------------------------ bus


class BusConfig(ConfigModel):
    """The ``[bus]`` table: defaults of every subscription's bounded mailbox."""

    default_capacity: int = Field(default=1024, gt=0)
    """Mailbox size of a subscription that does not set its own. Never unbounded."""
    default_policy: OverflowPolicy = OverflowPolicy.BLOCK
    """What a full mailbox does: ``block`` (backpressure), ``drop_oldest`` or ``conflate``."""
    batch_size: int = Field(default=256, gt=0)
    """Largest number of messages a subscriber drains from its mailbox in one go."""


# ----------------------------------------------------------------------------------- supervisor


class SupervisorConfig(ConfigModel):
    """The ``[supervisor]`` table: restart, quarantine and time budget of agents."""

    backoff_initial_s: float = Field(default=0.05, gt=0)
    """Delay before the first restart of a failed agent."""
    backoff_max_s: float = Field(default=5.0, gt=0)
    """Upper bound of the restart delay; must be >= backoff_initial_s."""
    backoff_multiplier: float = Field(default=2.0, ge=1)
    """Factor applied to the delay after each consecutive failure."""
    max_failures: int = Field(default=5, ge=1)
    """Failures within `failure_window` handled messages that quarantine an agent."""
    failure_window: int = Field(default=100, ge=1)
    """Number of most recent handled messages in which failures are counted. Counted in messages,
    not seconds, so the replay speed does not change which agents get quarantined."""
    handler_budget_ms: float = Field(default=250.0, gt=0)
    """A hook running longer than this is reported (not cancelled)."""
    stop_timeout_s: float = Field(default=5.0, gt=0)
    """How long `on_stop` may take at shutdown before the agent task is cancelled."""
    start_timeout_s: float = Field(default=30.0, gt=0)
    """How long one `on_start` attempt may take; a timeout counts as a failure and is retried."""

    @model_validator(mode="after")
    def _check_ranges(self) -> SupervisorConfig:
        found: list[tuple[Loc, str]] = []
        if self.backoff_max_s < self.backoff_initial_s:
            found.append(
                (
                    ("backoff_max_s",),
                    f"must be >= backoff_initial_s ({self.backoff_initial_s}) "
                    f"(got {self.backoff_max_s})",
                )
            )
        if self.failure_window < self.max_failures:
            found.append(
                (
                    ("failure_window",),
                    f"must be >= max_failures ({self.max_failures}) (got {self.failure_window})",
                )
            )
        if found:
            raise problems(*found)
        return self


# --------------------------------------------------------------------------------------- agents


class AgentConfig(ConfigModel):
    """One ``[[agents]]`` table: which plugin to load and how to host it."""

    name: str = Field(json_schema_extra={"pattern": AGENT_NAME_PATTERN})
    """Unique agent name (lower-case snake_case); used in topics, logs and metrics."""
    path: str | None = Field(default=None, json_schema_extra={"pattern": IMPORT_PATH_PATTERN})
    """Import path of the Agent class, ``package.module:ClassName``."""
    entry_point: str | None = Field(default=None, min_length=1)
    """Name of an entry point in the ``tradeengine.agents`` group (alternative to `path`)."""
    enabled: bool = True
    """A disabled agent is validated but not started."""
    params: dict[str, Any] = Field(default_factory=dict)
    """Plugin parameters; validated by the engine against the plugin's own params model."""
    subscriptions: list[str] | None = None
    """Topic patterns replacing the plugin's default subscriptions (``*`` one segment,
    ``>`` the rest)."""
    mailbox_capacity: int | None = Field(default=None, gt=0)
    """Mailbox size for this agent; default `bus.default_capacity`."""
    mailbox_policy: OverflowPolicy | None = None
    """Overflow policy for this agent; default `bus.default_policy`."""
    handler_budget_ms: float | None = Field(default=None, gt=0)
    """Time budget of one hook call; default `supervisor.handler_budget_ms`."""
    remote: bool = False
    """Run this agent in its own process (``tradeengine agent run --agent NAME``), connected
    over Kafka (``[kafka.remote_agents]``); the engine waits for it like for a local one."""
    worker: int = Field(default=0, ge=0, le=64)
    """0: the agent runs on the engine's event loop. k >= 1: it runs in local worker process k,
    which the engine starts and stops itself, with every other agent of the same number. Uses
    another CPU core; the decisions are the same wherever an agent runs."""

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        return _check_pattern(
            value,
            AGENT_NAME_PATTERN,
            "must be lower-case letters, digits and '_', start with a letter, at most 64 chars",
        )

    @field_validator("path")
    @classmethod
    def _check_path(cls, value: str | None) -> str | None:
        if value is None:
            return value
        return _check_pattern(value, IMPORT_PATH_PATTERN, "must look like 'package.module:Class'")

    @field_validator("subscriptions")
    @classmethod
    def _check_subscriptions(cls, value: list[str] | None) -> list[str] | None:
        for pattern in value or ():
            segments = pattern.split(".")
            if any(not s or any(c.isspace() for c in s) for s in segments) or (
                ">" in segments[:-1]
            ):
                raise PydanticCustomError(
                    "config_pattern",
                    "topic patterns are dot-separated non-empty segments, '>' only last "
                    f"(got {json.dumps(pattern)})",
                )
        return value

    @model_validator(mode="after")
    def _exactly_one_origin(self) -> AgentConfig:
        if self.path is not None and self.entry_point is not None:
            raise problems((("entry_point",), "set either path or entry_point, not both"))
        if self.path is None and self.entry_point is None:
            raise problems(((), "one of path ('package.module:Class') or entry_point is required"))
        return self


# -------------------------------------------------------------------------------------- sources


def _check_source_name(value: str) -> str:
    return _check_pattern(
        value,
        AGENT_NAME_PATTERN,
        "must be lower-case letters, digits and '_', start with a letter, at most 64 chars "
        "(it names the source's watermark topic)",
    )


SourceName = Annotated[str, AfterValidator(_check_source_name)]
"""Unique source name; it appears in topics and in watermarks, hence the restricted alphabet."""


class ReplaySourceConfig(ConfigModel):
    """A historical replay of bars or macro observations from files."""

    kind: Literal["replay"]
    name: SourceName
    """Unique source name."""
    paths: list[Path] = Field(min_length=1)
    """Files to replay (CSV, gzip CSV, Parquet), merged in event-time order. ``bundled:<file>``
    names data shipped with tradeengine (e.g. ``bundled:us_stocks_20_daily_close.csv.gz``);
    relative paths are resolved against the config file's directory."""
    layout: Literal["auto", "wide", "long", "ohlcv"] = "auto"
    """``wide``: time + one column per symbol (closes) or series; ``long``: one row per
    (time, symbol); ``ohlcv``: one instrument, time + Open/High/Low/Close[/Volume];
    ``auto``: a ``symbol``/``ticker`` (``series`` for macro) column means long, else a ``close``
    column means ohlcv, else wide."""
    data: Literal["bars", "macro"] = "bars"
    """What the files hold: OHLCV bars or macro series observations."""
    symbols: list[str] | None = None
    """Replay only these symbols or macro series (default: every one in the files). For one
    single-instrument OHLCV file, ``symbols[0]`` names its instrument (default: the file stem
    upper-cased)."""
    start: date | None = None
    """First day replayed (inclusive)."""
    end: date | None = None
    """Last day replayed (inclusive); must be >= start."""
    speed: float | None = Field(default=None, gt=0)
    """Multiple of real time (1.0 = real time); unset = as fast as possible."""
    currency: str = Field(default="USD", pattern=CURRENCY_PATTERN)
    """Currency the prices are quoted in."""
    market_close_utc: time = time(21, 0)
    """UTC time a date-only row is stamped with. Default: the US equity close (16:00 New York)
    ignoring daylight saving time, so in summer the stamp is an hour after the close (late,
    never early: no look-ahead)."""
    daily_midnight_as_date: bool = True
    """A file whose timestamps are all midnight (e.g. ``1990-01-02 00:00:00+00:00``) holds daily
    data: stamp its rows like date-only rows, at `market_close_utc`, not at 00:00 (before the
    day's values existed)."""
    interval: Literal["1min", "5min", "15min", "1h", "1d", "1w"] | None = None
    """Bar interval; unset = ``1d`` for dates, else inferred from the median row spacing."""
    series_prefix: str = Field(default="", pattern=r"^([A-Za-z0-9][A-Za-z0-9_.:-]{0,31})?$")
    """Macro data: prepended to each column name to form the series name (``ust_`` + ``10year``)."""
    unit: str = Field(default="decimal", max_length=32)
    """Macro data: unit of the values (the bundled yields are decimal: 0.0783 = 7.83 %)."""

    @model_validator(mode="after")
    def _check_dates(self) -> ReplaySourceConfig:
        if self.start is not None and self.end is not None and self.end < self.start:
            raise problems(
                (("end",), f"must be >= start ({self.start.isoformat()}) (got {self.end})")
            )
        return self


class PolygonSourceConfig(ConfigModel):
    """Live bars polled from Polygon.io."""

    kind: Literal["polygon"]
    name: SourceName
    symbols: list[str] = Field(min_length=1)
    api_key: SecretStr = Field(min_length=1, json_schema_extra=_SECRET_SCHEMA)
    """API key; environment only (``TRADEENGINE__SOURCES__<i>__API_KEY``)."""
    base_url: str = "https://api.polygon.io"
    poll_interval_s: float = Field(default=60.0, gt=0)


class FredSourceConfig(ConfigModel):
    """Macro series from the St. Louis Fed's FRED API."""

    kind: Literal["fred"]
    name: SourceName
    series: list[str] = Field(min_length=1)
    """FRED series ids, e.g. ``DGS10``."""
    api_key: SecretStr = Field(min_length=1, json_schema_extra=_SECRET_SCHEMA)
    """API key; environment only (``TRADEENGINE__SOURCES__<i>__API_KEY``)."""
    base_url: str = "https://api.stlouisfed.org/fred"
    poll_interval_s: float = Field(default=3600.0, gt=0)


class RedditSourceConfig(ConfigModel):
    """Posts from subreddits, as SocialPost events."""

    kind: Literal["reddit"]
    name: SourceName
    subreddits: list[str] = Field(min_length=1)
    client_id: str = Field(min_length=1)
    client_secret: SecretStr = Field(min_length=1, json_schema_extra=_SECRET_SCHEMA)
    """OAuth client secret; environment only (``TRADEENGINE__SOURCES__<i>__CLIENT_SECRET``)."""
    user_agent: str = Field(min_length=1)
    """Reddit requires a unique, descriptive user agent, so there is no default."""
    poll_interval_s: float = Field(default=60.0, gt=0)


SourceConfig = Annotated[
    ReplaySourceConfig | PolygonSourceConfig | FredSourceConfig | RedditSourceConfig,
    Field(discriminator="kind"),
]
"""One ``[[sources]]`` table; `kind` selects the model."""


# -------------------------------------------------------------------------------------- blender


class LightGBMConfig(ConfigModel):
    """The ``[blender.lightgbm]`` table: the quantile meta-model."""

    quantiles: list[Annotated[float, Field(gt=0, lt=1)]] = Field(
        default_factory=lambda: [0.05, 0.25, 0.5, 0.75, 0.95], min_length=1
    )
    """Quantiles predicted, each in (0, 1), strictly increasing."""
    calibration: Literal["isotonic", "conformal"] = "conformal"
    min_train_samples: int = Field(default=500, ge=1)
    """Precision weighting is used until this many labelled samples exist."""
    retrain_every: int = Field(default=21, ge=1)
    """Retrain after this many steps."""
    num_leaves: int = Field(default=31, ge=2)
    learning_rate: float = Field(default=0.05, gt=0, le=1)
    n_estimators: int = Field(default=200, ge=1)

    @field_validator("quantiles")
    @classmethod
    def _strictly_increasing(cls, value: list[float]) -> list[float]:
        for index, (low, high) in enumerate(itertools.pairwise(value)):
            if high <= low:
                raise PydanticCustomError(
                    "config_order",
                    f"must be strictly increasing (got {high} after {low} at index {index + 1})",
                )
        return value


class BlenderConfig(ConfigModel):
    """The ``[blender]`` table: how signals of one (symbol, step) become an Opportunity."""

    policy: Literal["precision", "lightgbm", "passthrough"] = "precision"
    common_horizon: Horizon = Horizon.D1
    """Horizon every signal is rescaled to before blending."""
    min_signals: int = Field(default=1, ge=1)
    """Fewer signals than this for a symbol in a step produce no Opportunity."""
    step_deadline_s: float = Field(default=5.0, gt=0)
    """Live mode: a step closes this long after its watermark even if agents are late."""
    lightgbm: LightGBMConfig = Field(default_factory=LightGBMConfig)


# ------------------------------------------------------------------------------------- selector


class BanditConfig(ConfigModel):
    """The ``[selector.bandit]`` table: a slate bandit learning from realized outcomes."""

    enabled: bool = False
    exploration: float = Field(default=0.1, ge=0, le=1)
    learning_rate: float = Field(default=0.05, gt=0, le=1)


class SelectorConfig(ConfigModel):
    """The ``[selector]`` table: diversified top-K of a step's opportunities."""

    policy: Literal["dpp", "penalty", "all"] = "penalty"
    top_k: int = Field(default=5, ge=1)
    correlation_penalty: float = Field(default=0.5, ge=0)
    correlation_lookback: int = Field(default=60, ge=2)
    """Returns (steps) used to estimate correlations."""
    bandit: BanditConfig = Field(default_factory=BanditConfig)


# ----------------------------------------------------------------------------------------- risk


class RiskConfig(ConfigModel):
    """The ``[risk]`` table: position sizing, CVaR limits and drawdown states."""

    sizing: Literal["risk_budget", "fixed_fraction"] = "risk_budget"
    risk_per_trade: float = Field(default=0.01, gt=0, le=0.1)
    """Fraction of equity lost if the stop is hit, fees included (risk_budget sizing)."""
    fixed_fraction: float = Field(default=0.1, gt=0, le=1)
    """Fraction of equity per position (fixed_fraction sizing)."""
    stop_sigma_k: float = Field(default=2.0, gt=0)
    """Stop distance in forecast sigmas."""
    max_positions: int = Field(default=5, gt=0)
    max_weight: float = Field(default=0.25, gt=0, le=1)
    """Largest position as a fraction of equity."""
    min_order_notional: float = Field(default=10.0, ge=0)
    """Smaller orders are denied (fees would dominate)."""
    fractional_shares: bool = True
    """Allow fractional share quantities (most retail brokers do; needed for a small account)."""
    allow_short: bool = False
    """Allow opening short positions; off by default (a small retail account usually cannot)."""
    cvar_alpha: float = Field(default=0.975, gt=0.5, lt=1)
    max_position_cvar: float = Field(default=0.02, gt=0, le=1)
    """Largest CVaR of one position, as a fraction of equity."""
    max_portfolio_cvar: float = Field(default=0.05, gt=0, le=1)
    """Largest CVaR of the portfolio, as a fraction of equity."""
    reduce_at_drawdown: float = Field(default=0.10, gt=0, lt=1)
    """Drawdown from peak equity that switches to REDUCING (no new risk)."""
    halt_at_drawdown: float = Field(default=0.20, gt=0, le=1)
    """Drawdown from peak equity that switches to HALTED; must be > reduce_at_drawdown."""
    min_edge_over_costs: float = Field(default=1.0, ge=0)
    """Deny an entry whose expected gain (|mu| x notional) is below this multiple of its
    round-trip fees and slippage (0 disables): a trade that cannot pay its costs on average
    only transfers equity to the broker."""
    drawdown_window: int = Field(default=252, ge=0)
    """Steps over which the peak for the REDUCING state is taken (0: since the run started).
    The state cools off once the peak rolls out of the window, so an account that stopped
    opening positions can resume; HALTED always measures from the all-time peak."""

    @model_validator(mode="after")
    def _check_ranges(self) -> RiskConfig:
        found: list[tuple[Loc, str]] = []
        if self.halt_at_drawdown <= self.reduce_at_drawdown:
            found.append(
                (
                    ("halt_at_drawdown",),
                    f"must be > reduce_at_drawdown ({self.reduce_at_drawdown}) "
                    f"(got {self.halt_at_drawdown})",
                )
            )
        if self.max_portfolio_cvar < self.max_position_cvar:
            found.append(
                (
                    ("max_portfolio_cvar",),
                    f"must be >= max_position_cvar ({self.max_position_cvar}) "
                    f"(got {self.max_portfolio_cvar})",
                )
            )
        if found:
            raise problems(*found)
        return self


# ------------------------------------------------------------------------------------ execution


class FxConfig(ConfigModel):
    """The ``[execution.fx]`` table: conversion between USD prices and the account currency."""

    rate: float = Field(default=1.08, gt=0)
    """USD per 1 unit of the account currency (EURUSD for a EUR account)."""
    series: str | None = None
    """Macro series that updates the rate during a run (e.g. ``DEXUSEU``); unset = fixed."""


class FeesConfig(ConfigModel):
    """The ``[execution.fees]`` table: fee per order = max(minimum, fixed + bps * notional)."""

    fixed: float = Field(default=1.0, ge=0)
    bps: float = Field(default=0.0, ge=0)
    minimum: float = Field(default=1.0, ge=0)
    currency: str = Field(default="EUR", pattern=CURRENCY_PATTERN)


class JournalConfig(ConfigModel):
    """The ``[execution.journal]`` table: the SQLite journal that lets a paper account resume."""

    enabled: bool = True
    batch_size: int = Field(default=256, gt=0)
    flush_interval_s: float = Field(default=1.0, gt=0)


class ExecutionConfig(ConfigModel):
    """The ``[execution]`` table: venue, account and the paper broker's cost model."""

    venue: Literal["paper"] = "paper"
    account_currency: str = Field(default="EUR", pattern=CURRENCY_PATTERN)
    initial_cash: float = Field(default=500.0, gt=0)
    """Starting cash of a new paper account, in the account currency."""
    fx: FxConfig = Field(default_factory=FxConfig)
    slippage_bps: float = Field(default=5.0, ge=0)
    fees: FeesConfig = Field(default_factory=FeesConfig)
    latency_ms: float = Field(default=0.0, ge=0)
    """Simulated delay between an order and its fill."""
    journal: JournalConfig = Field(default_factory=JournalConfig)

    @model_validator(mode="after")
    def _usd_account_has_no_fx(self) -> ExecutionConfig:
        # The rate is USD per account unit; for a USD account anything but 1 silently misprices
        # every order, which is worse than an error.
        if self.account_currency == "USD" and self.fx.rate != 1.0:
            raise problems(
                (("fx", "rate"), f"must be 1.0 when account_currency is 'USD' (got {self.fx.rate})")
            )
        return self


# -------------------------------------------------------------------------------- feature store


class RedisConfig(ConfigModel):
    """The ``[feature_store.redis]`` table."""

    url: str = "redis://127.0.0.1:6379/0"
    """``redis://``, ``rediss://`` (TLS) or ``unix://`` URL, without a password."""
    username: str | None = None
    password: SecretStr | None = Field(default=None, json_schema_extra=_SECRET_SCHEMA)
    """Environment only: ``TRADEENGINE__FEATURE_STORE__REDIS__PASSWORD``."""
    tls: bool = False
    ca_file: Path | None = None
    pool_size: int = Field(default=16, ge=1)
    connect_timeout_s: float = Field(default=2.0, gt=0)
    on_unavailable: Literal["fail", "degraded"] = "fail"
    """``fail``: stop the engine; ``degraded``: serve from the near cache and count misses."""

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in {"redis", "rediss", "unix"}:
            raise PydanticCustomError(
                "config_url",
                f"must be a redis://, rediss:// or unix:// URL (got {json.dumps(value)})",
            )
        env = env_var_name(("feature_store", "redis", "password"))
        if "password" in parse_qs(parts.query) or ("@" in value and "@" not in parts.netloc):
            # A password in the query would override the environment's, and "@" outside the
            # host part means a password with an unescaped "#", "/" or "?": echo neither.
            raise PydanticCustomError(
                "config_url",
                f"must not carry a password (query or user info); set {env} instead "
                f"(got {json.dumps(parts.scheme + '://' + (parts.hostname or '') + '/...')})",
            )
        if parts.password is not None:
            # Echo the URL with the password masked, so the user can find it but logs stay clean.
            host = parts.hostname or ""
            port = f":{parts.port}" if parts.port else ""
            user = parts.username or ""
            redacted = urlunsplit(parts._replace(netloc=f"{user}:***@{host}{port}"))
            raise PydanticCustomError(
                "config_url",
                f"must not embed a password; set {env} instead (got {json.dumps(redacted)})",
            )
        return value


class NearCacheConfig(ConfigModel):
    """The ``[feature_store.near_cache]`` table: in-process cache kept fresh by Redis tracking."""

    enabled: bool = False
    max_entries: int = Field(default=100_000, ge=1)
    fallback_ttl_s: float = Field(default=1.0, gt=0)
    """TTL of cached entries while invalidation messages are not flowing."""


class DriftConfig(ConfigModel):
    """The ``[feature_store.drift]`` table: distribution drift of stored features."""

    enabled: bool = True
    window: int = Field(default=500, ge=2)
    """Recent values compared with the reference distribution."""
    psi_threshold: float = Field(default=0.2, gt=0)
    ks_threshold: float = Field(default=0.1, gt=0, lt=1)
    interval_s: float = Field(default=30.0, gt=0)
    """How often drift is evaluated (off the hot path, in its own task)."""
    sample_every: int = Field(default=10, ge=1)
    """Observe one write in N per feature set: distributions need samples, not every value,
    and this keeps drift tracking off the per-event cost of agents' writes."""


class FeatureStoreConfig(ConfigModel):
    """The ``[feature_store]`` table: the one async client shared by all stages."""

    backend: Literal["memory", "redis"] = "memory"
    namespace: str = Field(default="tradeengine", pattern=r"^[A-Za-z0-9_.:-]+$")
    """Key prefix, so several engines can share one Redis."""
    default_ttl_s: float | None = Field(default=None, gt=0)
    """TTL of feature values that do not set one; unset = no expiry."""
    max_buffered_writes: int = Field(default=100_000, ge=1)
    """Writes held while the backend is unreachable; beyond it the oldest are dropped (counted,
    logged)."""
    redis: RedisConfig = Field(default_factory=RedisConfig)
    near_cache: NearCacheConfig = Field(default_factory=NearCacheConfig)
    drift: DriftConfig = Field(default_factory=DriftConfig)


class RegimeConfig(ConfigModel):
    """The ``[regime]`` table: the shared regime model (``engine.regime``) that labels every
    symbol, and the market, at every step before agents see the step's bars."""

    enabled: bool = True
    vol_halflife: float = Field(default=21.0, gt=0)
    """Half-life (bars) of the short EWMA volatility of daily log returns."""
    vol_long_halflife: float = Field(default=252.0, gt=0)
    """Half-life (bars) of the long-run EWMA volatility the short one is compared with."""
    trend_window: int = Field(default=200, ge=2)
    """Bars of the simple moving average the trend is measured against."""
    trend_band: float = Field(default=0.5, ge=0)
    """|trend z| above this is a trend: z = log(close / SMA) / (long vol x sqrt(window / 2))."""
    volatile_ratio: float = Field(default=1.25, gt=0)
    """Short / long volatility at or above this is volatile."""
    crisis_ratio: float = Field(default=2.0, gt=0)
    """Short / long volatility at or above this, in a downtrend, is a crisis."""
    min_obs: int = Field(default=60, ge=2)
    """Returns seen before a symbol's regime is anything but unknown."""

    @model_validator(mode="after")
    def _ordered(self) -> RegimeConfig:
        if self.crisis_ratio < self.volatile_ratio:
            raise ValueError(
                f"crisis_ratio ({self.crisis_ratio}) must be >= volatile_ratio "
                f"({self.volatile_ratio})"
            )
        return self


# ---------------------------------------------------------------------------------------- kafka


class KafkaEgressRoute(ConfigModel):
    """Bus topics matching `bus_pattern` are produced to Kafka topic `topic`."""

    bus_pattern: str = Field(min_length=1)
    topic: str = Field(pattern=KAFKA_TOPIC_PATTERN)
    on_full: Literal["block", "drop"] = "block"
    """When the egress queue (or, during an outage, the spool) is full: ``block`` holds the
    publisher back (trading topics: nothing is lost), ``drop`` drops the message and counts it
    (telemetry)."""

    @field_validator("bus_pattern")
    @classmethod
    def _check_bus_pattern(cls, value: str) -> str:
        return _check_bus_pattern(value)


class KafkaIngressRoute(ConfigModel):
    """Records of Kafka topic `topic` are validated and published on the bus.

    The bus topic is the message's own (a `Signal` goes to ``signal.<agent>.<symbol>``, so it
    reaches the blender like a local one), or the record's ``bus-topic`` header when it has one
    that agrees with the message; `bus_prefix`, when set, is put in front of it.
    """

    topic: str = Field(pattern=KAFKA_TOPIC_PATTERN)
    bus_prefix: str = ""
    types: list[str] | None = None
    """Message types accepted from this topic (e.g. ``["Signal"]``); unset = every contract
    type. Anything else is dead-lettered."""

    @field_validator("bus_prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        if value:
            _check_bus_pattern(value)
            if "*" in value or ">" in value:
                raise PydanticCustomError("config_pattern", "must not contain wildcards")
        return value

    @field_validator("types")
    @classmethod
    def _check_types(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return value
        unknown = [t for t in value if t not in KAFKA_MESSAGE_TYPES]
        if unknown:
            raise PydanticCustomError(
                "config_choice",
                f"unknown message type(s) {', '.join(map(repr, unknown))}; "
                f"known: {', '.join(KAFKA_MESSAGE_TYPES)}",
            )
        return value


KAFKA_MESSAGE_TYPES = (
    "Bar",
    "MacroObservation",
    "SocialPost",
    "Watermark",
    "Signal",
    "AgentStatus",
    "Opportunity",
    "Intent",
    "Order",
    "Fill",
    "DecisionLog",
    "RunControl",
)
"""Contract types the Kafka bridge carries (the ``type`` header)."""


def _check_bus_pattern(value: str) -> str:
    tokens = value.split(".")
    if any(not t or any(ch.isspace() for ch in t) for t in tokens) or (">" in tokens[:-1]):
        raise PydanticCustomError(
            "config_pattern",
            f"invalid bus topic pattern {json.dumps(value)}: dotted non-empty segments, "
            "'*' one segment, '>' only last",
        )
    return value


class KafkaTopicConfig(ConfigModel):
    """A topic ``tradeengine topics create`` (or ``auto_create_topics``) creates."""

    name: str = Field(pattern=KAFKA_TOPIC_PATTERN)
    partitions: int = Field(default=1, ge=1)
    replication_factor: int = Field(default=1, ge=1)
    retention_ms: int | None = Field(default=None, ge=-1)
    """-1 = keep forever; unset = broker default."""
    cleanup_policy: Literal["delete", "compact"] = "delete"


class KafkaProducerConfig(ConfigModel):
    """The ``[kafka.producer]`` table: how the egress produces (defaults: durable and batched)."""

    acks: Literal["all", "1", "0"] = "all"
    compression: Literal["lz4", "gzip", "snappy", "zstd", "none"] = "lz4"
    linger_ms: int = Field(default=5, ge=0)
    """aiokafka's wait for more records before sending a batch. The egress builds its own
    batches (one per partition per wake-up of its queue) and closes them when handing them
    over, so its records do not wait for it; it applies to the dead-letter producer."""
    max_batch_bytes: int = Field(default=262_144, ge=1024)
    idempotence: Literal["auto", "on", "off"] = "auto"
    """``auto``: idempotent where the broker supports it (InitProducerId), else off with a
    warning; ``on``: a broker without it is a start-up error."""
    request_timeout_ms: int = Field(default=5_000, ge=100)
    """A send not acknowledged within this is failed: the bridge turns DEGRADED and spools."""
    queue_capacity: int = Field(default=8_192, ge=1)
    """Bounded egress queue (bus mailbox of the bridge) per policy."""
    max_in_flight: int = Field(default=8_192, ge=1)
    """Records handed to the producer and not yet acknowledged."""


class KafkaConsumerConfig(ConfigModel):
    """The ``[kafka.consumer]`` table: how the ingress consumes."""

    auto_offset_reset: Literal["earliest", "latest"] = "latest"
    """Where a consumer group without committed offsets starts."""
    session_timeout_ms: int = Field(default=10_000, ge=1_000)
    heartbeat_interval_ms: int = Field(default=1_000, ge=100)
    fetch_max_wait_ms: int = Field(default=10, ge=0)
    """Low by default: the broker answers a fetch after this even when it has little data
    (aiokafka's 500 ms default puts produce->consume p99 at ~250 ms)."""
    max_poll_records: int = Field(default=500, ge=1)
    max_message_bytes: int = Field(default=1_048_576, ge=256)
    """Records with a larger value are dead-lettered as oversized."""
    dedup_window: int = Field(default=100_000, ge=1)
    """Message ids remembered to drop redeliveries (at-least-once -> exactly once on the bus)."""

    @model_validator(mode="after")
    def _heartbeat_below_session(self) -> KafkaConsumerConfig:
        if self.heartbeat_interval_ms * 3 > self.session_timeout_ms:
            raise problems(
                (
                    ("heartbeat_interval_ms",),
                    f"must be at most a third of session_timeout_ms ({self.session_timeout_ms})",
                )
            )
        return self


class KafkaSpoolConfig(ConfigModel):
    """The ``[kafka.spool]`` table: where egress goes while the broker is unreachable."""

    max_messages: int = Field(default=200_000, ge=1)
    """Messages held while the broker is down; beyond it ``block`` routes wait and ``drop``
    routes drop (counted)."""
    file: bool = True
    """Also append spooled messages to ``<engine.run_dir>/kafka-spool/<client_id>.spool``, so a
    restart during an outage loses nothing (the next start drains it first)."""
    reconnect_backoff_initial_s: float = Field(default=0.2, gt=0)
    reconnect_backoff_max_s: float = Field(default=5.0, gt=0)


class LastValueCacheConfig(ConfigModel):
    """The ``[kafka.last_value_cache]`` table: the latest egress message per (topic, key) in
    Redis (``feature_store.redis`` connection), for dashboards and warm restarts."""

    enabled: bool = False
    ttl_s: float = Field(default=3_600.0, gt=0)
    key_prefix: str = Field(default="tradeengine:lvc", pattern=r"^[A-Za-z0-9_.:-]+$")


class KafkaRemoteAgentsConfig(ConfigModel):
    """The ``[kafka.remote_agents]`` table: topics that connect agents with ``remote = true``
    (run by ``tradeengine agent run``) to the engine. Each must have one partition: the order
    of bars, watermarks and signals is what makes step completion work."""

    feed_topic: str = Field(default="tradeengine.feed", pattern=KAFKA_TOPIC_PATTERN)
    """Engine -> remote agents: run control, bars, macro, posts, source watermarks."""
    agents_topic: str = Field(default="tradeengine.agents", pattern=KAFKA_TOPIC_PATTERN)
    """Remote agents -> engine: signals, agent watermarks, agent statuses."""
    ready_timeout_s: float = Field(default=60.0, gt=0)
    """How long the engine waits at start for every remote agent to join the run."""
    silence_timeout_s: float = Field(default=30.0, gt=0)
    """A remote agent the run waits for that sends nothing for this long is quarantined (the
    run goes on without it, as for a local agent that keeps failing) instead of stalling."""


class KafkaConfig(ConfigModel):
    """The ``[kafka]`` table: the optional bridge between the bus and Kafka."""

    enabled: bool = False
    bootstrap_servers: list[str] = Field(default_factory=lambda: ["127.0.0.1:9092"], min_length=1)
    client_id: str = Field(default="tradeengine", min_length=1)
    group_id: str = Field(default="tradeengine", min_length=1)
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = Field(default=None, json_schema_extra=_SECRET_SCHEMA)
    """Environment only: ``TRADEENGINE__KAFKA__SASL_PASSWORD``."""
    ssl_cafile: Path | None = None
    egress: list[KafkaEgressRoute] = Field(default_factory=list)
    ingress: list[KafkaIngressRoute] = Field(default_factory=list)
    dead_letter_topic: str = Field(default="tradeengine.dlq", pattern=KAFKA_TOPIC_PATTERN)
    auto_create_topics: bool = False
    """Create missing topics at start (from `topics`, else 1 partition); off: a missing topic
    is a start-up error naming it."""
    topics: list[KafkaTopicConfig] = Field(default_factory=list)
    producer: KafkaProducerConfig = Field(default_factory=KafkaProducerConfig)
    consumer: KafkaConsumerConfig = Field(default_factory=KafkaConsumerConfig)
    spool: KafkaSpoolConfig = Field(default_factory=KafkaSpoolConfig)
    last_value_cache: LastValueCacheConfig = Field(default_factory=LastValueCacheConfig)
    remote_agents: KafkaRemoteAgentsConfig = Field(default_factory=KafkaRemoteAgentsConfig)

    @model_validator(mode="after")
    def _check_security(self) -> KafkaConfig:
        # Only an enabled bridge needs credentials: a disabled [kafka] table must not force
        # developers to export a password they never use.
        if not self.enabled:
            return self
        found: list[tuple[Loc, str]] = []
        uses_sasl = self.security_protocol.startswith("SASL_")
        if self.sasl_mechanism is not None and not uses_sasl:
            found.append(
                (
                    ("security_protocol",),
                    f"must be SASL_PLAINTEXT or SASL_SSL when sasl_mechanism is set "
                    f"(got {self.security_protocol!r})",
                )
            )
        if uses_sasl and self.sasl_mechanism is None:
            found.append((("sasl_mechanism",), f"required by {self.security_protocol}"))
        if self.sasl_mechanism is not None:
            if self.sasl_username is None:
                found.append((("sasl_username",), "required when sasl_mechanism is set"))
            if self.sasl_password is None:
                env = env_var_name(("kafka", "sasl_password"))
                found.append(
                    (("sasl_password",), f"required when sasl_mechanism is set; set {env}")
                )
        seen: dict[str, int] = {}
        for index, topic in enumerate(self.topics):
            if topic.name in seen:
                found.append(
                    (
                        ("topics", index, "name"),
                        f"duplicate topic {topic.name!r} (already topics[{seen[topic.name]}])",
                    )
                )
            seen.setdefault(topic.name, index)
            remote = (self.remote_agents.feed_topic, self.remote_agents.agents_topic)
            if topic.name in remote and topic.partitions != 1:
                found.append(
                    (
                        ("topics", index, "partitions"),
                        f"must be 1 for {topic.name!r}: remote agents rely on the order of one "
                        "partition (bars before watermarks, signals before the agent's watermark)",
                    )
                )
        if found:
            raise problems(*found)
        return self


# ------------------------------------------------------------------------------------ telemetry

LogLevel = Literal["debug", "info", "warning", "error"]

LOG_COMPONENTS = (
    "engine",
    "replay",
    "supervisor",
    "agent",
    "blender",
    "pipeline",
    "broker",
    "journal",
    "telemetry",
    "cli",
    "library",
)
"""Values of the ``component`` field every log record carries; keys of ``component_levels``."""


class MetricsConfig(ConfigModel):
    """The ``[telemetry.metrics]`` table: Prometheus ``/metrics``, ``/healthz``, ``/readyz``."""

    enabled: bool = True
    host: str = Field(default="127.0.0.1", min_length=1)
    """Loopback by default: exposing metrics beyond the host is an explicit choice."""
    port: int = Field(default=9464, ge=0, le=65535)
    """0 = any free port (tests)."""
    event_loop_lag_interval_s: float = Field(default=0.25, gt=0, le=60)
    """How often the event-loop lag probe wakes up; its lateness is the lag."""


class TracingConfig(ConfigModel):
    """The ``[telemetry.tracing]`` table: OpenTelemetry spans from signal to fill."""

    enabled: bool = True
    sampling_ratio: float = Field(default=1.0, ge=0, le=1)
    """Share of traces (one per source event) recorded; decided on the trace id, so a trace is
    recorded whole or not at all."""
    otlp_endpoint: str | None = None
    """OTLP collector endpoint, ``http(s)://host:port``; needs ``pip install 'tradeengine[otlp]'``.
    Unset = no spans are recorded (the API's no-op provider) and logs still carry trace ids."""
    otlp_protocol: Literal["grpc", "http/protobuf"] = "grpc"
    otlp_timeout_s: float = Field(default=10.0, gt=0, le=120)
    """Per-export timeout; an unreachable collector degrades tracing, never trading."""

    @field_validator("otlp_endpoint")
    @classmethod
    def _endpoint_is_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if "@" in parts.netloc:
            # Never echo it: the part before "@" is a credential.
            raise PydanticCustomError(
                "config_otlp_endpoint",
                "must not embed credentials (user:password@); collectors that need "
                "authentication are not supported yet",
            )
        try:
            port = parts.port
        except ValueError:
            port = None
        if parts.scheme not in ("http", "https") or not parts.hostname or port is None:
            raise PydanticCustomError(
                "config_otlp_endpoint",
                f"must look like http://host:port or https://host:port (got {json.dumps(value)})",
            )
        return value


class TelemetryConfig(ConfigModel):
    """The ``[telemetry]`` table: logging, metrics and tracing."""

    log_level: LogLevel = "info"
    log_format: Literal["auto", "json", "console"] = "auto"
    """``auto``: console in a terminal, JSON otherwise."""
    component_levels: dict[str, LogLevel] = Field(default_factory=dict)
    """Per-component overrides, e.g. ``{ pipeline = "debug", "agent.momentum" = "debug" }``.
    Keys are a component (see ``LOG_COMPONENTS``) or ``agent.<agent name>``."""
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    tracing: TracingConfig = Field(default_factory=TracingConfig)

    @field_validator("component_levels")
    @classmethod
    def _known_components(cls, value: dict[str, LogLevel]) -> dict[str, LogLevel]:
        found: list[tuple[Loc, str]] = []
        for key in value:
            component, _, agent = key.partition(".")
            if component not in LOG_COMPONENTS:
                hint = difflib.get_close_matches(component, LOG_COMPONENTS, n=1)
                found.append(
                    (
                        (key,),
                        f"unknown log component {component!r}"
                        + (f" (did you mean {hint[0]!r}?)" if hint else "")
                        + f"; known: {', '.join(LOG_COMPONENTS)}",
                    )
                )
            elif agent and (component != "agent" or not re.match(AGENT_NAME_PATTERN, agent)):
                found.append(((key,), "only agents take a sub-name: use 'agent.<agent name>'"))
        if found:
            raise problems(*found)
        return value


# ----------------------------------------------------------------------------------------- root


class EngineConfig(ConfigModel):
    """The whole of engine.toml. Build it with `config.load_config`, not by hand."""

    engine: EngineSectionConfig = Field(default_factory=EngineSectionConfig)
    bus: BusConfig = Field(default_factory=BusConfig)
    supervisor: SupervisorConfig = Field(default_factory=SupervisorConfig)
    agents: list[AgentConfig] = Field(default_factory=list)
    sources: list[SourceConfig] = Field(default_factory=list)
    blender: BlenderConfig = Field(default_factory=BlenderConfig)
    selector: SelectorConfig = Field(default_factory=SelectorConfig)
    risk: RiskConfig = Field(default_factory=RiskConfig)
    execution: ExecutionConfig = Field(default_factory=ExecutionConfig)
    feature_store: FeatureStoreConfig = Field(default_factory=FeatureStoreConfig)
    regime: RegimeConfig = Field(default_factory=RegimeConfig)
    kafka: KafkaConfig = Field(default_factory=KafkaConfig)
    telemetry: TelemetryConfig = Field(default_factory=TelemetryConfig)

    @field_validator("agents", mode="wrap")
    @classmethod
    def _unique_agent_names(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        return _validate_unique_names(value, handler, "agent")

    @field_validator("sources", mode="wrap")
    @classmethod
    def _unique_source_names(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        return _validate_unique_names(value, handler, "source")

    @model_validator(mode="after")
    def _check_agent_placement(self) -> EngineConfig:
        found: list[tuple[Loc, str]] = [
            (("agents", i, "remote"), "needs kafka.enabled = true (remote agents talk over Kafka)")
            for i, agent in enumerate(self.agents)
            if agent.remote and agent.enabled and not self.kafka.enabled
        ]
        found += [
            (
                ("agents", i, "worker"),
                "a remote agent runs in its own process already; set worker = 0 or remote = false",
            )
            for i, agent in enumerate(self.agents)
            if agent.remote and agent.worker
        ]
        found += self._worker_feed_problems()
        if found:
            raise problems(*found)
        return self

    def _worker_feed_problems(self) -> list[tuple[Loc, str]]:
        """Worker processes are fed by the engine's replay; any other market data on the
        engine's bus would reach only the agents in the engine's loop."""
        workers = [i for i, a in enumerate(self.agents) if a.worker and a.enabled and not a.remote]
        if not workers:
            return []
        found: list[tuple[Loc, str]] = []
        if not any(isinstance(s, ReplaySourceConfig) for s in self.sources):
            found += [
                (
                    ("agents", i, "worker"),
                    "worker processes are fed by the replay and this config has no replay "
                    "source; set worker = 0",
                )
                for i in workers
            ]
        market = {"Bar", "MacroObservation", "SocialPost"}
        if self.kafka.enabled:
            for j, route in enumerate(self.kafka.ingress):
                # unset or empty `types` = every contract type (as the bridge reads it)
                if route.bus_prefix or (route.types and not market & set(route.types)):
                    continue
                found += [
                    (
                        ("agents", i, "worker"),
                        f"kafka.ingress[{j}] ({route.topic}) may put market data on the engine's "
                        "bus, which reaches only agents in the engine's loop; give the route "
                        "`types` without Bar, MacroObservation and SocialPost, or a `bus_prefix`, "
                        "or set worker = 0",
                    )
                    for i in workers
                ]
        return found

    def canonical_json(self) -> str:
        """The config as canonical JSON (sorted keys, no whitespace), secret fields, the
        ``telemetry`` section, the ``kafka`` section except its ingress routes, and the agents'
        ``remote`` and ``worker`` settings left out.

        Secrets are omitted rather than masked, so setting or rotating a password does not
        change the hash of an otherwise identical config. Telemetry (log levels, the metrics
        port, tracing) cannot change a decision, so turning on debug logs or tracing leaves the
        hash, and so the journal, byte-identical.
        """
        public = _without_secrets(self, self.model_dump(mode="json"))
        del public["telemetry"]
        # Transport is not a decision input either: where agents run (in process or remote
        # over Kafka) and what is sent out must leave the journal byte-identical. What comes
        # in (ingress routes, e.g. external signals the blender uses) is: it stays hashed.
        ingress = public["kafka"]["ingress"]
        del public["kafka"]
        if ingress:
            public["kafka"] = {"ingress": ingress}
        for agent in public["agents"]:
            del agent["remote"]
            del agent["worker"]
        return json.dumps(public, sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    def config_hash(self) -> str:
        """SHA-256 (hex) of :meth:`canonical_json`; recorded in every DecisionLog."""
        return hashlib.sha256(self.canonical_json().encode("utf-8")).hexdigest()


def _without_secrets(value: Any, dumped: Any) -> Any:
    """`dumped` (a JSON dump of `value`) with every secret field removed, walking both at once."""
    if isinstance(value, BaseModel):
        return {
            name: _without_secrets(getattr(value, name), dumped[name])
            for name, field in type(value).model_fields.items()
            if not is_secret_field(field)
        }
    if isinstance(value, list | tuple):
        return [_without_secrets(item, out) for item, out in zip(value, dumped, strict=True)]
    if isinstance(value, dict):
        return {key: _without_secrets(item, dumped[key]) for key, item in value.items()}
    return dumped


def secret_values(model: BaseModel) -> list[str]:
    """Every non-empty secret value set in `model` (for log redaction; never log the result)."""
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, SecretStr):
            secret = value.get_secret_value()
            if secret:
                found.append(secret)
        elif isinstance(value, BaseModel):
            for name in type(value).model_fields:
                walk(getattr(value, name))
        elif isinstance(value, list | tuple):
            for item in value:
                walk(item)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)

    walk(model)
    return found


def config_json_schema() -> dict[str, Any]:
    """JSON Schema of engine.toml (validation mode; secrets marked ``"secret": true``)."""
    return EngineConfig.model_json_schema()
