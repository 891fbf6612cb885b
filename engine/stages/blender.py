"""Blender: all signals of one (symbol, step) become one Opportunity.

Two parts, tested apart:

- a :class:`BlendPolicy` turns a list of signals into an Opportunity (pure, synchronous);
- :class:`BlenderStage` owns the bus side: it buffers signals per step, knows when every live
  agent is done with a step (agent watermarks), blends, publishes the opportunities and then its
  own ``watermark.stage.blender``.

Decisions documented here (and tested in tests/stages):

- Horizon scaling: a signal's mu scales linearly with time and its sigma with the square root of
  time (i.i.d. returns), using :attr:`Horizon.trading_days`.
- Blended sigma (:class:`PrecisionBlender`): the textbook inverse-variance formula
  ``1 / sum(1/sigma_i^2)`` assumes independent agent errors, so five agents reading the same bars
  would look more than twice as sure as one of them. They are not independent. The blender uses

      sigma^2 = (sum_i w_i sigma_i)^2 + sum_i w_i (mu_i - mu)^2

  The first term is the standard deviation of the weighted forecast error when the errors are
  perfectly correlated, the worst case for non-negative weights (by the triangle inequality of
  standard deviations no correlation structure gives more), so adding agents never shrinks it
  below what they claim on average. The second term is the agents' weighted disagreement (the
  between-model variance of the law of total variance): when agents disagree, the blended view
  is less certain than any one of them claims.
- Regime and trace id of an Opportunity are those of its largest-weight signal (ties: the first
  by agent name), so a trade's trace leads to the signal that drove it most.
- Signals are sorted by (agent, trace id) inside the policies, so the floating-point sums and the
  contribution list do not depend on the order in which agents' messages arrived.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from statistics import NormalDist
from typing import Any, Protocol

from config.models import BlenderConfig, RiskConfig
from contracts import (
    AgentState,
    AgentStatus,
    Horizon,
    IdGenerator,
    Opportunity,
    Signal,
    Watermark,
    topics,
)
from engine.bus import MessageBus, OverflowPolicy, Subscription, SubscriptionClosed
from engine.checked_contracts import CheckedOpportunities
from engine.clock import Clock
from engine.lifecycle import AsyncService
from engine.telemetry.logging import Logger
from engine.telemetry.observe import LatencyObserver
from engine.telemetry.tracing import ChainTracer

__all__ = [
    "DEFAULT_QUANTILE_LEVELS",
    "BlendPolicy",
    "BlenderStage",
    "BlenderStats",
    "PassthroughBlender",
    "PrecisionBlender",
    "blend_policy_from_config",
    "normal_tail_risk",
    "scale_to_horizon",
]

DEFAULT_QUANTILE_LEVELS: tuple[float, ...] = (0.05, 0.25, 0.5, 0.75, 0.95)
_STD_NORMAL = NormalDist()


class BlendPolicy(Protocol):
    """Turns the signals of one (symbol, step) into an Opportunity, or None (nothing to trade)."""

    name: str
    version: str

    def blend(
        self,
        symbol: str,
        signals: Sequence[Signal],
        *,
        step: datetime,
        now: datetime,
        trace_id: str,
    ) -> Opportunity | None:
        """`trace_id` is a fallback; policies use their main signal's trace where there is one."""
        ...


# --------------------------------------------------------------------------------- shared maths


def scale_to_horizon(
    mu: float, sigma: float, source: Horizon, target: Horizon
) -> tuple[float, float]:
    """(mu, sigma) of `source` rescaled to `target`: mu ~ h, sigma ~ sqrt(h) (trading days)."""
    factors = _scale_factors(source, target)
    if factors is None:
        return mu, sigma
    ratio, root = factors
    return mu * ratio, sigma * root


@functools.cache
def _scale_factors(source: Horizon, target: Horizon) -> tuple[float, float] | None:
    """(ratio, sqrt(ratio)) from `source` to `target`, None for the same horizon: computed once
    per pair, not per signal (the same values, so the scaled numbers are the same bits)."""
    if source is target:
        return None
    ratio = target.trading_days / source.trading_days
    return ratio, math.sqrt(ratio)


def normal_tail_risk(mu: float, sigma: float, alpha: float) -> tuple[float, float]:
    """(VaR, CVaR) at confidence `alpha` of a normal return N(mu, sigma^2).

    Losses are positive return units (VaR 0.03 = a 3 % loss); both are floored at 0, since a
    forecast whose alpha-tail is still a gain has no loss to report.
    """
    z, density, tail = _tail_constants(alpha)
    var = sigma * z - mu
    cvar = sigma * density / tail - mu
    return max(var, 0.0), max(cvar, 0.0)


@functools.cache
def _tail_constants(alpha: float) -> tuple[float, float, float]:
    """(z = Phi^-1(alpha), phi(z), 1 - alpha), once per alpha rather than once per blend
    (inv_cdf is a rational approximation evaluated in Python, several microseconds)."""
    z = _STD_NORMAL.inv_cdf(alpha)
    return z, _STD_NORMAL.pdf(z), 1.0 - alpha


def _quantile_table(levels: Sequence[float]) -> tuple[tuple[float, float], ...]:
    """(level, standard-normal quantile) pairs, computed once per blender, not per blend."""
    return tuple((level, _STD_NORMAL.inv_cdf(level)) for level in levels)


def _check_levels(levels: Sequence[float]) -> tuple[float, ...]:
    out = tuple(float(x) for x in levels)
    for level in out:
        if not 0.0 < level < 1.0:
            raise ValueError(f"quantile levels must lie in (0, 1), got {level}")
    for lo, hi in itertools.pairwise(out):
        if hi <= lo:
            raise ValueError(f"quantile levels must be strictly increasing: {lo} then {hi}")
    return out


def _check_alpha(alpha: float) -> float:
    if not 0.5 < alpha < 1.0:
        raise ValueError(f"cvar_alpha must lie in (0.5, 1), got {alpha}")
    return float(alpha)


_SIGNAL_ORDER = operator.attrgetter("agent", "trace_id")


def _sorted_signals(symbol: str, signals: Sequence[Signal]) -> list[Signal]:
    for s in signals:
        if s.symbol != symbol:
            raise ValueError(
                f"signal of {s.symbol!r} (agent {s.agent!r}) passed to blend {symbol!r}"
            )
    return sorted(signals, key=_SIGNAL_ORDER)


# ------------------------------------------------------------------------------------- policies


class _NormalBlender:
    """What both policies share: horizon scaling of the inputs, and an Opportunity with normal
    quantiles and tail risk assembled from a chosen (mu, sigma) and per-signal weights."""

    name: str
    version = "v0"

    def __init__(
        self,
        common_horizon: Horizon,
        quantile_levels: Sequence[float] = DEFAULT_QUANTILE_LEVELS,
        cvar_alpha: float = 0.975,
    ) -> None:
        self.common_horizon = Horizon(common_horizon)
        self.quantile_levels = _check_levels(quantile_levels)
        self.cvar_alpha = _check_alpha(cvar_alpha)
        self._quantile_z = _quantile_table(self.quantile_levels)
        self._checked = CheckedOpportunities()

    @property
    def model_version(self) -> str:
        return f"{self.name}-{self.version}"

    def _scaled(
        self, symbol: str, signals: Sequence[Signal]
    ) -> tuple[list[Signal], list[float], list[float]]:
        """The signals in a stable order, with their mu and sigma rescaled to the common
        horizon (as :func:`scale_to_horizon` does), as two parallel lists."""
        ordered = _sorted_signals(symbol, signals)
        target = self.common_horizon
        mus: list[float] = []
        sigmas: list[float] = []
        for s in ordered:  # `scale_to_horizon` per signal, without a tuple per signal
            factors = _scale_factors(s.horizon, target)
            if factors is None:
                mus.append(s.mu)
                sigmas.append(s.sigma)
            else:
                mus.append(s.mu * factors[0])
                sigmas.append(s.sigma * factors[1])
        return ordered, mus, sigmas

    def _opportunity(
        self,
        symbol: str,
        ordered: Sequence[Signal],
        mus: Sequence[float],
        sigmas: Sequence[float],
        weights: Sequence[float],
        main: int,
        mu: float,
        sigma: float,
        *,
        step: datetime,
        now: datetime,
    ) -> Opportunity:
        var, cvar = normal_tail_risk(mu, sigma, self.cvar_alpha)
        head = ordered[main]
        quantiles = [(lv, mu + sigma * z) for lv, z in self._quantile_z]
        common: dict[str, Any] = {
            "trace_id": head.trace_id,
            "ts_event": step,
            "ts_init": now,
            "symbol": symbol,
            "horizon": self.common_horizon,
            "mu": mu,
            "sigma": sigma,
            "regime": head.regime,
            "var": var,
            "cvar": cvar,
            "blender": self.name,
            "model_version": self.model_version,
        }
        opp = self._checked.build(
            **common,
            quantiles=quantiles,
            contributions=list(zip(ordered, weights, mus, sigmas, strict=True)),
        )
        if opp is not None:  # every field proven valid (engine.checked_contracts)
            return opp
        # Nested parts as plain dicts: the Opportunity validates them in the same pass, which
        # costs about a third less than building each part as its own model first.
        contributions = [
            {
                "agent": s.agent,
                "weight": w,
                "mu": m,
                "sigma": sig,
                "confidence": s.confidence,
                "signal_trace_id": s.trace_id,
            }
            for s, w, m, sig in zip(ordered, weights, mus, sigmas, strict=True)
        ]
        opp = Opportunity(
            **common,
            # Non-crossing by construction: sigma > 0 and the levels strictly increase.
            quantiles=[{"level": lv, "value": v} for lv, v in quantiles],
            contributions=contributions,
        )
        self._checked.learn(opp)
        return opp


class PrecisionBlender(_NormalBlender):
    """Confidence-weighted precision blending with a conservative (correlated-errors) sigma.

    Weights: ``w_i ~ confidence_i / sigma_i^2`` of the signals scaled to the common horizon,
    normalised to sum 1; a signal with confidence 0 gets weight 0 (it is still listed in the
    contributions, with weight 0, for the audit trail). All weights zero -> None.
    """

    name = "precision"

    def blend(
        self,
        symbol: str,
        signals: Sequence[Signal],
        *,
        step: datetime,
        now: datetime,
        trace_id: str,
    ) -> Opportunity | None:
        ordered, mus, sigmas = self._scaled(symbol, signals)
        if not ordered:
            return None
        raw = [s.confidence / (sig * sig) for s, sig in zip(ordered, sigmas, strict=True)]
        total = math.fsum(raw)
        if total == 0.0 and (top := max(s.confidence for s in ordered)) > 0.0:
            # Tiny (subnormal) confidences underflow to zero weight; only their ratios matter,
            # so rescale by the largest (normal inputs keep their exact, unscaled arithmetic).
            raw = [
                (s.confidence / top) / (sig * sig) for s, sig in zip(ordered, sigmas, strict=True)
            ]
            total = math.fsum(raw)
        if not total > 0.0 or not math.isfinite(total):
            return None
        weights = [r / total for r in raw]
        # fsum rounds the exact sum once, so list or generator input gives the same bits; lists
        # are cheaper to iterate.
        mu = math.fsum([w * m for w, m in zip(weights, mus, strict=True)])
        mean_sigma = math.fsum([w * sig for w, sig in zip(weights, sigmas, strict=True)])
        disagreement = math.fsum([w * (m - mu) ** 2 for w, m in zip(weights, mus, strict=True)])
        sigma = math.sqrt(mean_sigma * mean_sigma + disagreement)
        # The largest weight, ties: the first (the weights are finite here: total is).
        main = 0
        for i in range(1, len(weights)):
            if weights[i] > weights[main]:
                main = i
        return self._opportunity(
            symbol, ordered, mus, sigmas, weights, main, mu, sigma, step=step, now=now
        )


class PassthroughBlender(_NormalBlender):
    """For single-rule strategies: the signal itself becomes the Opportunity.

    With several signals for one (symbol, step) the highest-confidence one is passed through
    (ties: the smaller scaled sigma, then the agent name); the others are listed with weight 0.
    A best signal with confidence 0 gives None, like the precision blender with zero weights.
    The signal is rescaled to the common horizon so downstream stages see one horizon.
    """

    name = "passthrough"

    def blend(
        self,
        symbol: str,
        signals: Sequence[Signal],
        *,
        step: datetime,
        now: datetime,
        trace_id: str,
    ) -> Opportunity | None:
        ordered, mus, sigmas = self._scaled(symbol, signals)
        if not ordered:
            return None
        best = min(range(len(ordered)), key=lambda i: (-ordered[i].confidence, sigmas[i], i))
        if ordered[best].confidence <= 0.0:
            return None
        weights = [1.0 if i == best else 0.0 for i in range(len(ordered))]
        return self._opportunity(
            symbol,
            ordered,
            mus,
            sigmas,
            weights,
            best,
            mus[best],
            sigmas[best],
            step=step,
            now=now,
        )


def blend_policy_from_config(cfg: BlenderConfig, risk: RiskConfig) -> BlendPolicy:
    """The configured policy; `lightgbm` is not implemented yet (a start-up error)."""
    if cfg.policy == "precision":
        return PrecisionBlender(cfg.common_horizon, cvar_alpha=risk.cvar_alpha)
    if cfg.policy == "passthrough":
        return PassthroughBlender(cfg.common_horizon, cvar_alpha=risk.cvar_alpha)
    if cfg.policy == "lightgbm":
        raise NotImplementedError(
            "blender.policy = 'lightgbm' arrives with the LightGBM issue; use 'precision'"
        )
    raise ValueError(f"unknown blender.policy {cfg.policy!r}")  # pragma: no cover - Literal


# ---------------------------------------------------------------------------------------- stage


@dataclass(slots=True)
class BlenderStats:
    """Counters of the blender stage; read by telemetry, tests and the run summary."""

    signals: int = 0
    """Signals received (including late and superseded ones)."""
    opportunities: int = 0
    steps: int = 0
    """Steps closed (= stage watermarks published)."""
    late_signals: int = 0
    """Signals for a step already closed: logged, counted here, never blended."""
    late_by_agent: dict[str, int] = field(default_factory=dict)
    superseded_signals: int = 0
    """A later signal of the same agent for the same (symbol, step) replaced an earlier one."""
    below_min_signals: int = 0
    """(symbol, step) pairs skipped because they had fewer than `min_signals` signals."""
    no_opportunity: int = 0
    """(symbol, step) pairs the policy declined (e.g. all confidences zero)."""
    blend_errors: int = 0
    quarantined_agents: list[str] = field(default_factory=list)


class BlenderStage(AsyncService):
    """Closes steps when every live agent is done with them, blends and publishes.

    One mailbox takes signals, agent watermarks, agent statuses and source watermarks, so they
    are handled in their publish order. The stage's watermark is the minimum of the live agents'
    latest watermarks; it advances every step the agents pass, with or without signals.

    - Quarantine: an agent whose AgentStatus says `quarantined` is no longer waited for (logged).
    - No live agent at all (none configured, or all quarantined): no agent watermark will ever
      come, so the stage follows the minimum of the source watermarks seen instead; otherwise the
      pipeline downstream would stall forever. While agents live, the source watermarks only
      cap the stage's: an agent fed ahead of the replay (in a worker process) cannot close a
      step the engine has not published yet.
    - One vote per agent per (symbol, step): a later signal from the same agent replaces the
      earlier one (counted as superseded, logged) instead of doubling that agent's weight.
    - Late signals (for a step already closed) are counted per agent and logged at warning; they
      are not blended, since the step's opportunities and watermark are already published.
    - Signals from agents not in `agents` are blended if they arrive in time, but not waited for.
    - Live deadlines (`step_deadline_s`) are not implemented in v0: steps close on watermarks.
    """

    def __init__(
        self,
        *,
        bus: MessageBus,
        policy: BlendPolicy,
        agents: Sequence[str],
        clock: Clock,
        ids: IdGenerator,
        log: Logger,
        capacity: int = 4096,
        min_signals: int = 1,
        batch_size: int = 256,
        name: str = "blender",
        on_crash: Callable[[BaseException], None] | None = None,
        latency: LatencyObserver | None = None,
        chain: ChainTracer | None = None,
        sources: Sequence[str] = (),
    ) -> None:
        """`sources`: the replay's sources; no step closes before all of them have published
        it (see `_target`)."""
        if min_signals < 1:
            raise ValueError(f"min_signals must be >= 1, got {min_signals}")
        self._bus = bus
        self._on_crash = on_crash
        self._latency = latency
        self._chain = chain if chain is not None and chain.recording else None
        self._policy = policy
        self._agents = tuple(sorted(set(agents)))
        self._live: set[str] = set(self._agents)
        self._clock = clock
        self._ids = ids
        self._log = log.bind(stage=name)
        self._capacity = capacity
        self._min_signals = min_signals
        self._batch_size = batch_size
        self._name = name
        self._agent_marks: dict[str, datetime] = {}
        self._source_marks: dict[str, datetime] = {}
        self._sources = tuple(sorted(set(sources)))
        # step -> symbol -> agent -> signal
        self._pending: dict[datetime, dict[str, dict[str, Signal]]] = {}
        self._closed: datetime | None = None
        self._sub: Subscription | None = None
        self._task: asyncio.Task[None] | None = None
        self._agent_wm_prefix = topics.ALL_AGENT_WATERMARKS[:-1]
        self._opportunity_topics: dict[str, str] = {}
        self._source_wm_prefix = topics.ALL_SOURCE_WATERMARKS[:-1]
        self.stats = BlenderStats()
        self.error: BaseException | None = None
        """The exception that ended the stage's task, if one did (also logged)."""

    # ---- introspection

    @property
    def watermark(self) -> datetime | None:
        """The last step closed (published with its stage watermark)."""
        return self._closed

    @property
    def agents(self) -> tuple[str, ...]:
        """The agents this stage was configured to wait for (quarantined ones included)."""
        return self._agents

    @property
    def live_agents(self) -> tuple[str, ...]:
        return tuple(sorted(self._live))

    @property
    def open_steps(self) -> tuple[datetime, ...]:
        return tuple(sorted(self._pending))

    # ---- lifecycle

    async def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("blender stage already started")
        self._sub = self._bus.subscribe(
            [
                topics.ALL_SIGNALS,
                topics.ALL_AGENT_WATERMARKS,
                topics.ALL_AGENT_STATUS,
                topics.ALL_SOURCE_WATERMARKS,
            ],
            name=f"stage.{self._name}",
            capacity=self._capacity,
            # The trading path never drops: a lost watermark would stall the step forever.
            policy=OverflowPolicy.BLOCK,
        )
        self._task = asyncio.create_task(self._run(self._sub), name=f"stage:{self._name}")
        self._task.add_done_callback(self._report_crash)

    async def stop(self) -> None:
        """Handle what is already in the mailbox, then end the task."""
        if self._sub is not None:
            self._bus.unsubscribe(self._sub)
        if self._task is not None:
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            except Exception:  # already logged by _report_crash and kept in self.error
                pass
            self._task = None
        if self._pending:
            self._log.warning(
                "blender stopped with open steps; their signals were not blended",
                open_steps=[s.isoformat() for s in sorted(self._pending)],
                signals=sum(
                    len(by_agent)
                    for by_sym in self._pending.values()
                    for by_agent in by_sym.values()
                ),
            )

    def _report_crash(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and (exc := task.exception()) is not None:
            self.error = exc
            self._log.error("blender task crashed", exc_info=exc)
            if self._on_crash is not None:
                # Without the blender no step completes: the run must fail, not wait forever.
                self._on_crash(exc)

    # ---- the loop

    async def _run(self, sub: Subscription) -> None:
        while True:
            try:
                batch = await sub.get_batch(self._batch_size)
            except SubscriptionClosed:
                return
            on_signal = self._on_signal
            for topic, message in batch:
                # Signals are most of the traffic and never await: handled here directly, as
                # `handle` would, without a coroutine per message.
                if isinstance(message, Signal):
                    on_signal(message)
                else:
                    await self.handle(topic, message)

    async def handle(self, topic: str, message: object) -> None:
        """Process one delivery (tests may call it; the stage's task handles Signals itself,
        without this coroutine, and calls it for everything else)."""
        if isinstance(message, Signal):
            self._on_signal(message)
            return
        if isinstance(message, Watermark):
            if topic.startswith(self._agent_wm_prefix):
                if message.origin not in self._live:
                    return
                previous = self._agent_marks.get(message.origin)
                if previous is None or message.ts_event > previous:
                    self._agent_marks[message.origin] = message.ts_event
            elif topic.startswith(self._source_wm_prefix):
                previous = self._source_marks.get(message.origin)
                if previous is None or message.ts_event > previous:
                    self._source_marks[message.origin] = message.ts_event
                # (with live agents this only matters when one of them is ahead of the sources)
            else:  # pragma: no cover - the subscription patterns exclude it
                return
            await self._advance()
            return
        if isinstance(message, AgentStatus):
            if message.state is AgentState.QUARANTINED and message.agent in self._live:
                self._live.discard(message.agent)
                self._agent_marks.pop(message.agent, None)
                self.stats.quarantined_agents.append(message.agent)
                self._log.warning(
                    "agent quarantined; blender no longer waits for it",
                    agent=message.agent,
                    reason=message.reason,
                    live_agents=sorted(self._live),
                    following="agents" if self._live else "source watermarks",
                )
                await self._advance()
            return
        self._log.warning(
            "blender received an unexpected message; ignored",
            topic=topic,
            message_type=type(message).__name__,
        )

    def _on_signal(self, sig: Signal) -> None:
        self.stats.signals += 1
        step = sig.ts_event
        if self._closed is not None and step <= self._closed:
            self.stats.late_signals += 1
            self.stats.late_by_agent[sig.agent] = self.stats.late_by_agent.get(sig.agent, 0) + 1
            self._log.warning(
                "late signal: its step is already closed; counted, not blended",
                agent=sig.agent,
                symbol=sig.symbol,
                step=step.isoformat(),
                watermark=self._closed.isoformat(),
                trace_id=sig.trace_id,
            )
            return
        by_agent = self._pending.setdefault(step, {}).setdefault(sig.symbol, {})
        replaced = by_agent.get(sig.agent)
        if replaced is not None:
            self.stats.superseded_signals += 1
            self._log.warning(
                "agent sent a second signal for the same (symbol, step); the later one counts",
                agent=sig.agent,
                symbol=sig.symbol,
                step=step.isoformat(),
                replaced_trace_id=replaced.trace_id,
                trace_id=sig.trace_id,
            )
        by_agent[sig.agent] = sig

    def _target(self) -> datetime | None:
        """Up to where every step is complete: min over live agents, else over sources; never
        past what every configured source has published. In process an agent cannot pass the
        step its sources published, but an agent fed ahead (in a worker process) can, and a
        step must not close before the engine has published it."""
        marks = self._source_marks
        if self._live:
            if len(self._agent_marks) < len(self._live):
                return None  # some live agent has not reported any step yet
            target = min(self._agent_marks[a] for a in self._live)
            for source in self._sources:
                published = marks.get(source)
                if published is None:
                    return None  # the replay has not published its first step yet
                if published < target:
                    target = published
            return target
        if not marks:
            return None
        return min(marks.values())

    async def _advance(self) -> None:
        target = self._target()
        if target is None or (self._closed is not None and target <= self._closed):
            return
        out: list[tuple[str, object]] = []
        for step in sorted(s for s in self._pending if s <= target):
            out.extend(self._close_step(step, self._pending.pop(step)))
        if self._closed is None or self._closed < target:
            out.append(self._watermark(target))
        await self._bus.publish_batch(out)

    def _close_step(
        self, step: datetime, by_symbol: dict[str, dict[str, Signal]]
    ) -> list[tuple[str, object]]:
        out: list[tuple[str, object]] = []
        now = self._clock.now()
        started = self._clock.monotonic() if self._latency is not None else 0.0
        for symbol in sorted(by_symbol):
            signals = [by_symbol[symbol][a] for a in sorted(by_symbol[symbol])]
            if len(signals) < self._min_signals:
                self.stats.below_min_signals += 1
                continue
            try:
                opp = self._policy.blend(
                    symbol, signals, step=step, now=now, trace_id=signals[0].trace_id
                )
            except Exception as exc:
                self.stats.blend_errors += 1
                self._log.error(
                    "blend policy raised; no opportunity for this (symbol, step)",
                    policy=self._policy.name,
                    symbol=symbol,
                    step=step.isoformat(),
                    agents=[s.agent for s in signals],
                    trace_id=signals[0].trace_id,
                    exc_info=exc,
                )
                continue
            if opp is None:
                self.stats.no_opportunity += 1
                continue
            self.stats.opportunities += 1
            if self._chain is not None:
                self._chain.opportunity(opp)
            topic = self._opportunity_topics.get(symbol)
            if topic is None:
                topic = self._opportunity_topics[symbol] = topics.opportunity(symbol)
            out.append((topic, opp))
        out.append(self._watermark(step))
        if self._latency is not None:
            self._latency.observe(self._clock.monotonic() - started)
        return out

    def _watermark(self, step: datetime) -> tuple[str, object]:
        self._closed = step
        self.stats.steps += 1
        wm = Watermark(
            trace_id=self._ids.trace_id(),
            ts_event=step,
            ts_init=self._clock.now(),
            origin=self._name,
        )
        return topics.stage_watermark(self._name), wm
