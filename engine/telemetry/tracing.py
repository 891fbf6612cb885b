"""OpenTelemetry spans for the decision chain: source event -> signal -> opportunity -> selection
-> intent/denial -> order -> fill, one trace per source event, so a trace shows why a trade
happened.

How the chain becomes one trace: the contracts already carry a W3C trace id (a bar's trace id is
reused by every signal, opportunity, decision, order and fill it leads to). `ChainTracer` makes
the OpenTelemetry trace id *equal* to that contract trace id, and finds each span's parent in a
bounded index keyed by what the contracts reference (trace id + agent/symbol, intent id, order
id). A log line carrying `trace_id` (and `span_id_for`) therefore leads straight to the trace.

Trade-offs made here:

- The engine owns its tracer provider; the global OpenTelemetry provider is never set, so several
  engines (tests) can live in one process, and library instrumentation cannot leak into the
  chain's traces.
- Only the OpenTelemetry *API* is a hard dependency. The SDK and OTLP exporters are the optional
  ``otlp`` extra, imported by `build_tracing` only when spans are exported. Without them, or when
  tracing is disabled or has nowhere to go, every `ChainTracer` method returns after testing one
  attribute: no attribute dict, no context, no span.
- Root spans carry the contract's trace id through a custom SDK id generator (fed by a
  contextvar just around `start_span`). The root's span id is *derived* from the trace id, so a
  span whose real parent is unknown (evicted from the index, or never recorded here, e.g. an exit
  order) is parented on that derived id: it still lands in trace T, under its source span when
  that span was exported.
- Sampling is `TraceIdRatioBased` on the contract trace id, not parent-based: every span of a
  chain shares the trace id, so all its spans get the same decision without any parent lookup.
  The facade applies the same test first, so unsampled chains cost no attribute dicts either.
- Spans are instantaneous markers (started and ended at once, SDK wall clock): the chain's stages
  do not bracket their work with spans, and market time is an attribute (`tradeengine.ts_event`).
- Export runs on the SDK's batch thread. An unreachable collector is a logged degradation, never
  an exception in the engine: a counting exporter wraps the OTLP one, reports state changes (not
  every batch) to the engine's loop, and `Tracing.stop` is bounded by the export timeout.
- Single event loop: `ChainTracer` is called from the engine's loop thread only (no locks).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, TraceFlags
from opentelemetry.util.types import AttributeValue

from contracts import DecisionKind, DecisionLog, Fill, Opportunity, Order, Signal
from engine.lifecycle import AsyncService
from engine.telemetry.logging import Logger

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

__all__ = [
    "DEFAULT_MAX_INDEX",
    "ChainTracer",
    "Tracing",
    "TracingSetupError",
    "build_tracing",
    "root_span_id",
]

DEFAULT_MAX_INDEX: Final = 200_000
"""Span contexts kept for parent lookups (about 100 bytes each plus the key)."""

SERVICE_NAME: Final = "tradeengine"
INSTRUMENTATION_NAME: Final = "tradeengine.chain"
OTLP_PROTOCOLS: Final = ("grpc", "http/protobuf")

_SAMPLED: Final = TraceFlags(TraceFlags.SAMPLED)
_EMPTY: Final = Context()
_LOW64: Final = (1 << 64) - 1

_ROOT_IDS: contextvars.ContextVar[tuple[int, int] | None] = contextvars.ContextVar(
    "tradeengine_tracing_root_ids", default=None
)
"""(trace id, span id) the id generator hands out for the root span being started, if any."""

IndexKey = tuple[Hashable, ...]


class TracingSetupError(Exception):
    """Tracing cannot be set up as configured (the message is one line, fit for an operator)."""


def root_span_id(trace_id: str) -> int:
    """The span id of trace `trace_id`'s source span, derived from the trace id (never zero).

    Also the span id of the synthetic parent used when a span's real parent is unknown, so such
    spans hang under the source span whenever that span was recorded.
    """
    digest = hashlib.blake2b(bytes.fromhex(trace_id), digest_size=8).digest()
    return int.from_bytes(digest, "big") or 1


# ----------------------------------------------------------------------------------- the facade


class ChainTracer:
    """Records one short span per step of the decision chain. Cheap no-op unless `recording`.

    Every method first tests `recording` (and the trace's sampling decision) and returns at once
    when there is nothing to record. Parents are looked up in a bounded FIFO index of span
    contexts; when the expected parent is unknown the span still joins its trace (see
    `root_span_id`).
    """

    __slots__ = ("_bound", "_index", "_max_index", "_sample_all", "_tracer", "recording")

    def __init__(
        self,
        tracer: trace.Tracer,
        *,
        recording: bool,
        sampling_ratio: float = 1.0,
        max_index: int = DEFAULT_MAX_INDEX,
    ) -> None:
        if max_index < 1:
            raise ValueError(f"max_index must be at least 1, got {max_index}")
        self._tracer = tracer
        self.recording = recording
        """False: every method is a no-op and `span_id_for` answers None."""
        # Same rule as the SDK's TraceIdRatioBased sampler: the low 64 bits against a bound.
        self._bound = round(sampling_ratio * (_LOW64 + 1))
        self._sample_all = self._bound > _LOW64
        self._max_index = max_index
        self._index: OrderedDict[IndexKey, SpanContext] = OrderedDict()

    @classmethod
    def disabled(cls) -> ChainTracer:
        """A tracer that records nothing (for components built without tracing, and tests)."""
        return cls(trace.NoOpTracer(), recording=False)

    @property
    def index_size(self) -> int:
        """Entries in the parent index (bounded by `max_index`)."""
        return len(self._index)

    # --------------------------------------------------------------------------- public steps

    def source_event(
        self, trace_id: str, *, kind: str, source: str, symbol: str, ts_event: datetime
    ) -> None:
        """The root span of trace `trace_id`: a bar, macro observation or other source event."""
        if not self.recording or not self._sampled(trace_id):
            return
        attributes: dict[str, AttributeValue] = {
            "tradeengine.source": source,
            "tradeengine.symbol": symbol,
            "tradeengine.ts_event": ts_event.isoformat(),
        }
        self._record_root(f"source.{kind}", attributes, ("src", trace_id), trace_id)

    def signal(self, signal: Signal) -> None:
        """An agent's signal; parent: the source span of its trace."""
        if not self.recording:
            return
        trace_id = signal.trace_id
        if not self._sampled(trace_id):
            return
        attributes: dict[str, AttributeValue] = {
            "tradeengine.agent": signal.agent,
            "tradeengine.symbol": signal.symbol,
            "tradeengine.mu": signal.mu,
            "tradeengine.sigma": signal.sigma,
            "tradeengine.horizon": signal.horizon.value,
            "tradeengine.confidence": signal.confidence,
            "tradeengine.regime": signal.regime.value,
            "tradeengine.ts_event": signal.ts_event.isoformat(),
        }
        parent = self._parent(trace_id, ("src", trace_id))
        key = ("sig", trace_id, signal.agent, signal.symbol)
        self._record("signal", parent, attributes, key, trace_id)

    def opportunity(self, opp: Opportunity) -> None:
        """A blended opportunity; parent: its main signal's span, links: the other signals."""
        if not self.recording:
            return
        trace_id = opp.trace_id
        if not self._sampled(trace_id):
            return
        contributions = opp.contributions
        # The blender's main signal: the highest weight, ties to the first (its own rule); the
        # opportunity carries that signal's trace id.
        main = max(range(len(contributions)), key=lambda i: (contributions[i].weight, -i))
        main_agent: str | None = (
            contributions[main].agent if contributions[main].signal_trace_id == trace_id else None
        )
        links: list[Link] = []
        for i, contribution in enumerate(contributions):
            if i == main and main_agent is not None:
                continue
            linked = self._index.get(
                ("sig", contribution.signal_trace_id, contribution.agent, opp.symbol)
            )
            if linked is None:
                linked = self._known_root(contribution.signal_trace_id)
            if linked is not None:
                links.append(
                    Link(
                        linked,
                        {
                            "tradeengine.agent": contribution.agent,
                            "tradeengine.weight": contribution.weight,
                        },
                    )
                )
        attributes: dict[str, AttributeValue] = {
            "tradeengine.symbol": opp.symbol,
            "tradeengine.mu": opp.mu,
            "tradeengine.sigma": opp.sigma,
            "tradeengine.horizon": opp.horizon.value,
            "tradeengine.regime": opp.regime.value,
            "tradeengine.blender": opp.blender,
            "tradeengine.model_version": opp.model_version,
            "tradeengine.contributions": len(opp.contributions),
            "tradeengine.ts_event": opp.ts_event.isoformat(),
        }
        if opp.var is not None:
            attributes["tradeengine.var"] = opp.var
        if opp.cvar is not None:
            attributes["tradeengine.cvar"] = opp.cvar
        if main_agent is not None:
            attributes["tradeengine.agent"] = main_agent
            parent = self._parent(
                trace_id, ("sig", trace_id, main_agent, opp.symbol), ("src", trace_id)
            )
        else:
            parent = self._parent(trace_id, ("src", trace_id))
        self._record(
            "opportunity", parent, attributes, ("opp", trace_id, opp.symbol), trace_id, links
        )

    def selection(
        self, opp: Opportunity, *, selected: bool, rank: int | None, score: float | None
    ) -> None:
        """The selection stage's verdict on an opportunity; parent: the opportunity span."""
        if not self.recording:
            return
        trace_id = opp.trace_id
        if not self._sampled(trace_id):
            return
        attributes: dict[str, AttributeValue] = {
            "tradeengine.symbol": opp.symbol,
            "tradeengine.selected": selected,
        }
        if rank is not None:
            attributes["tradeengine.rank"] = rank
        if score is not None:
            attributes["tradeengine.score"] = score
        parent = self._parent(trace_id, ("opp", trace_id, opp.symbol))
        self._record("selection", parent, attributes, ("sel", trace_id, opp.symbol), trace_id)

    def decision(self, decision: DecisionLog) -> None:
        """An "intent" or "denial" span (no_trade records nothing); parent: the selection span of
        (trace, symbol), else the opportunity span, else the trace's source span."""
        if not self.recording:
            return
        kind = decision.kind
        if kind is DecisionKind.NO_TRADE:
            return
        trace_id = decision.trace_id
        if not self._sampled(trace_id):
            return
        intent = decision.intent
        symbol = decision.symbol or (intent.symbol if intent is not None else None)
        attributes: dict[str, AttributeValue] = {"tradeengine.decision_id": decision.decision_id}
        if symbol is not None:
            attributes["tradeengine.symbol"] = symbol
            parent = self._parent(trace_id, ("sel", trace_id, symbol), ("opp", trace_id, symbol))
        else:
            parent = self._parent(trace_id)
        if kind is DecisionKind.INTENT and intent is not None:
            opened_by = decision.inputs.get("opened_by_intent")
            if ("last", trace_id) not in self._index:
                # A decision that starts its own trace (an exit when a position's horizon has
                # elapsed): make it the trace's real root, linked to the intent that opened it.
                attributes["tradeengine.intent_id"] = intent.intent_id
                attributes["tradeengine.side"] = intent.side.value
                attributes["tradeengine.effect"] = intent.effect.value
                attributes["tradeengine.quantity"] = intent.quantity
                opener = self._index.get(("intent", str(opened_by))) if opened_by else None
                self._record_root(
                    "intent",
                    attributes,
                    ("intent", intent.intent_id),
                    trace_id,
                    links=[Link(opener)] if opener is not None else (),
                )
                return
            attributes["tradeengine.intent_id"] = intent.intent_id
            attributes["tradeengine.side"] = intent.side.value
            attributes["tradeengine.effect"] = intent.effect.value
            attributes["tradeengine.quantity"] = intent.quantity
            attributes["tradeengine.price"] = intent.price_ref
            attributes["tradeengine.notional"] = intent.notional
            attributes["tradeengine.risk_budget"] = intent.risk_budget
            attributes["tradeengine.horizon"] = intent.horizon.value
            self._record("intent", parent, attributes, ("intent", intent.intent_id), trace_id)
            return
        if decision.reason is not None:
            attributes["tradeengine.reason"] = decision.reason.value
        if decision.detail:
            attributes["tradeengine.detail"] = decision.detail
        self._record("denial", parent, attributes, None, trace_id)

    def order(self, order: Order) -> None:
        """An order sent to the venue; parent: the span of the intent it executes."""
        if not self.recording:
            return
        trace_id = order.trace_id
        if not self._sampled(trace_id):
            return
        attributes: dict[str, AttributeValue] = {
            "tradeengine.order_id": order.order_id,
            "tradeengine.intent_id": order.intent_id,
            "tradeengine.symbol": order.symbol,
            "tradeengine.side": order.side.value,
            "tradeengine.quantity": order.quantity,
            "tradeengine.order_type": order.order_type.value,
            "tradeengine.status": order.status.value,
            "tradeengine.venue": order.venue,
        }
        if order.limit_price is not None:
            attributes["tradeengine.price"] = order.limit_price
        parent = self._parent(trace_id, ("intent", order.intent_id))
        self._record("order", parent, attributes, ("order", order.order_id), trace_id)

    def fill(self, fill: Fill) -> None:
        """A (partial) fill; parent: the span of its order."""
        if not self.recording:
            return
        trace_id = fill.trace_id
        if not self._sampled(trace_id):
            return
        attributes: dict[str, AttributeValue] = {
            "tradeengine.fill_id": fill.fill_id,
            "tradeengine.order_id": fill.order_id,
            "tradeengine.symbol": fill.symbol,
            "tradeengine.side": fill.side.value,
            "tradeengine.quantity": fill.quantity,
            "tradeengine.price": fill.price,
            "tradeengine.currency": fill.currency,
            "tradeengine.fee": fill.fee,
            "tradeengine.fee_currency": fill.fee_currency,
            "tradeengine.slippage_bps": fill.slippage_bps,
            "tradeengine.liquidity_side": fill.liquidity_side.value,
        }
        parent = self._parent(trace_id, ("order", fill.order_id))
        self._record("fill", parent, attributes, None, trace_id)

    def span_id_for(self, trace_id: str) -> str | None:
        """Hex span id of the latest span recorded in `trace_id` (for log records), or None."""
        if not self.recording:
            return None
        context = self._index.get(("last", trace_id))
        return None if context is None else format(context.span_id, "016x")

    # ------------------------------------------------------------------------------- internals

    def _sampled(self, trace_id: str) -> bool:
        return self._sample_all or int(trace_id[16:], 16) < self._bound

    def _known_root(self, trace_id: str) -> SpanContext | None:
        """The source span of another trace, for a link, if that trace can have been recorded."""
        if not self._sampled(trace_id):
            return None
        known = self._index.get(("src", trace_id))
        return known if known is not None else _synthetic_parent(trace_id)

    def _parent(self, trace_id: str, *keys: IndexKey) -> Context:
        """A context whose current span is the first known of `keys` in trace `trace_id`, else
        the trace's (possibly synthetic) source span."""
        index = self._index
        expected = int(trace_id, 16)
        for key in keys:
            found = index.get(key)
            # A parent in another trace would move the span out of T: fall back instead.
            if found is not None and found.trace_id == expected:
                return trace.set_span_in_context(NonRecordingSpan(found), _EMPTY)
        source = index.get(("src", trace_id))
        parent = source if source is not None else _synthetic_parent(trace_id)
        return trace.set_span_in_context(NonRecordingSpan(parent), _EMPTY)

    def _record_root(
        self,
        name: str,
        attributes: dict[str, AttributeValue],
        key: IndexKey,
        trace_id: str,
        links: Sequence[Link] = (),
    ) -> None:
        """A span without parent whose ids are the contract's trace id and its derived span id."""
        token = _ROOT_IDS.set((int(trace_id, 16), root_span_id(trace_id)))
        try:
            span = self._tracer.start_span(name, context=_EMPTY, attributes=attributes, links=links)
        finally:
            _ROOT_IDS.reset(token)
        span.end()
        self._remember(key, trace_id, span.get_span_context())

    def _record(
        self,
        name: str,
        parent: Context,
        attributes: dict[str, AttributeValue],
        key: IndexKey | None,
        trace_id: str,
        links: Sequence[Link] = (),
    ) -> None:
        span = self._tracer.start_span(name, context=parent, attributes=attributes, links=links)
        span.end()
        self._remember(key, trace_id, span.get_span_context())

    def _remember(self, key: IndexKey | None, trace_id: str, context: SpanContext) -> None:
        if not context.trace_flags.sampled:
            return  # nothing exported: children fall back to the (equally unsampled) trace root
        index = self._index
        if key is not None:
            index[key] = context
        last = ("last", trace_id)
        index[last] = context
        index.move_to_end(last)
        while len(index) > self._max_index:
            index.popitem(last=False)


def _synthetic_parent(trace_id: str) -> SpanContext:
    return SpanContext(
        trace_id=int(trace_id, 16),
        span_id=root_span_id(trace_id),
        is_remote=True,
        trace_flags=_SAMPLED,
    )


# ------------------------------------------------------------------------------ export health


ExportStateCallback = Callable[[bool, str], None]
"""Called as `callback(ok, reason)` when span export starts failing (False) or recovers (True)."""


class _ExportMonitor:
    """Counts exported spans and failed exports and reports health *transitions*.

    Lives on the SDK's export thread; callbacks are handed to the engine's loop (captured by
    `Tracing.start`) because the engine's health registry is single-loop and lock-free.
    """

    def __init__(self, *, log: Logger, on_state: ExportStateCallback | None, target: str) -> None:
        self.spans_exported = 0
        self.export_failures = 0
        self.healthy = True
        self._log = log
        self._on_state = on_state
        self._target = target
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._closing_deadline: float | None = None

    def bind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._loop_thread = threading.get_ident()

    def begin_closing(self, timeout_s: float) -> None:
        """From now on drop batches once the deadline passed or an export failed."""
        self._closing_deadline = time.monotonic() + timeout_s

    def should_skip(self) -> bool:
        deadline = self._closing_deadline
        return deadline is not None and (not self.healthy or time.monotonic() > deadline)

    def succeeded(self, count: int) -> None:
        self.spans_exported += count
        if not self.healthy:
            self.healthy = True
            self._log.info("tracing export recovered", target=self._target)
            self._notify(True, "")

    def failed(self, reason: str) -> None:
        self.export_failures += 1
        if self.healthy:
            self.healthy = False
            self._log.warning("tracing export failing", target=self._target, reason=reason)
            self._notify(False, reason)

    def _notify(self, ok: bool, reason: str) -> None:
        if self._on_state is None:
            return
        loop = self._loop
        if loop is not None and threading.get_ident() != self._loop_thread:
            try:
                loop.call_soon_threadsafe(self._call, ok, reason)
                return
            except RuntimeError:  # the loop is closed: nobody is left to tell but the caller
                pass
        self._call(ok, reason)

    def _call(self, ok: bool, reason: str) -> None:
        assert self._on_state is not None
        try:
            self._on_state(ok, reason)
        except Exception as exc:  # a broken listener must not break span export
            self._log.error("tracing export state callback failed", exc_info=exc)


def _counting_exporter(inner: SpanExporter, monitor: _ExportMonitor) -> SpanExporter:
    """Wrap `inner` so every export is counted by `monitor` and never raises."""
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    class _CountingExporter(SpanExporter):
        def __init__(self) -> None:
            self._shut = False
            self._lock = threading.Lock()

        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            if self._shut or monitor.should_skip():
                monitor.failed("shutting down")
                return SpanExportResult.FAILURE
            try:
                result = inner.export(spans)
            except Exception as exc:  # the SDK would only log it; count it as a failure
                monitor.failed(f"{type(exc).__name__}: {exc}")
                return SpanExportResult.FAILURE
            if result is SpanExportResult.SUCCESS:
                monitor.succeeded(len(spans))
            else:
                monitor.failed(f"exporter returned {getattr(result, 'name', result)}")
            return result

        def shutdown(self) -> None:
            with self._lock:
                if self._shut:
                    return
                self._shut = True
            inner.shutdown()

        def force_flush(self, timeout_millis: int = 30_000) -> bool:
            return inner.force_flush(timeout_millis)

    return _CountingExporter()


# ------------------------------------------------------------------------------- the service


class Tracing(AsyncService):
    """Owns the tracer provider behind `chain`. `stop` flushes and shuts the SDK down, bounded
    by the export timeout; it is idempotent and safe without `start`."""

    def __init__(
        self,
        chain: ChainTracer,
        *,
        provider: trace.TracerProvider,
        log: Logger,
        sdk_provider: SdkTracerProvider | None = None,
        exporter: SpanExporter | None = None,
        monitor: _ExportMonitor | None = None,
        shutdown_timeout_s: float = 10.0,
    ) -> None:
        self.chain = chain
        self.provider = provider
        """The engine's own provider (never the global one); a no-op one when not recording."""
        self._sdk_provider = sdk_provider
        self._exporter = exporter
        self._monitor = monitor
        self._log = log
        self._shutdown_timeout_s = shutdown_timeout_s
        self._stopped = False

    @property
    def recording(self) -> bool:
        return self.chain.recording

    @property
    def spans_exported(self) -> int:
        """Spans the exporter accepted (0 without the SDK)."""
        return 0 if self._monitor is None else self._monitor.spans_exported

    @property
    def export_failures(self) -> int:
        """Export calls (batches) that failed or were dropped at shutdown (0 without the SDK)."""
        return 0 if self._monitor is None else self._monitor.export_failures

    async def start(self) -> None:
        if self._monitor is not None:
            self._monitor.bind_loop(asyncio.get_running_loop())

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self.chain.recording = False
        provider = self._sdk_provider
        if provider is None:
            return
        timeout = self._shutdown_timeout_s
        if self._monitor is not None:
            self._monitor.begin_closing(timeout)
        # A daemon thread rather than the default executor: a hung export must neither block
        # the loop nor keep `asyncio.run` (which joins executor threads) from returning.
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def finished() -> None:
            if not done.done():
                done.set_result(None)

        def shutdown() -> None:
            try:
                provider.shutdown()
            except Exception as exc:
                self._log.warning("tracing shutdown failed", exc_info=exc)
            finally:
                with contextlib.suppress(RuntimeError):  # the loop is already closed
                    loop.call_soon_threadsafe(finished)

        threading.Thread(target=shutdown, name="tradeengine-tracing-stop", daemon=True).start()
        try:
            await asyncio.wait_for(asyncio.shield(done), timeout)
            return
        except TimeoutError:
            pass
        # Still exporting: shutting the exporter down aborts its retry back-off.
        if self._exporter is not None:
            self._exporter.shutdown()
        try:
            await asyncio.wait_for(done, 1.0)
        except TimeoutError:
            self._log.warning(
                "tracing shutdown timed out; unexported spans are lost", timeout_s=timeout
            )


# ------------------------------------------------------------------------------- the builder


def _validated_endpoint(endpoint: str, protocol: str) -> str:
    """The endpoint as the exporter for `protocol` wants it, or TracingSetupError."""
    bad = (
        f"telemetry.tracing.otlp_endpoint {endpoint!r} is not a valid OTLP endpoint: "
        "expected http://host:port or https://host:port"
    )
    try:
        parts = urlsplit(endpoint)
        port = parts.port
    except ValueError:
        raise TracingSetupError(bad) from None
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or port is None
        or parts.query
        or parts.fragment
        or parts.username is not None
    ):
        raise TracingSetupError(bad)
    path = parts.path.rstrip("/")
    if protocol == "grpc":
        if path:
            raise TracingSetupError(f"{bad} (a gRPC endpoint takes no path)")
        return endpoint
    return endpoint if path else f"{parts.scheme}://{parts.netloc}/v1/traces"


BATCH_QUEUE_SIZE = 65_536
BATCH_EXPORT_SIZE = 2_048


def build_tracing(
    *,
    enabled: bool,
    sampling_ratio: float,
    otlp_endpoint: str | None,
    otlp_protocol: str = "grpc",
    otlp_timeout_s: float = 10.0,
    log: Logger,
    exporter: SpanExporter | None = None,
    simple_processor: bool = False,
    on_export_state: ExportStateCallback | None = None,
    max_index: int = DEFAULT_MAX_INDEX,
) -> Tracing:
    """Tracing as configured: recording only when `enabled` and spans have somewhere to go
    (`otlp_endpoint`, or `exporter` given by tests). Constructing it does no I/O.

    `simple_processor` exports each span as it ends (tests); the default batches them on a
    background thread. `on_export_state(ok, reason)` is called on the engine's loop when export
    starts failing or recovers. Raises `TracingSetupError` for a bad endpoint, protocol or
    ratio, or when the SDK is needed but not installed.
    """
    if not enabled or (otlp_endpoint is None and exporter is None):
        return Tracing(
            ChainTracer(trace.NoOpTracer(), recording=False),
            provider=trace.NoOpTracerProvider(),
            log=log,
        )
    if not 0.0 <= sampling_ratio <= 1.0:
        raise TracingSetupError(
            f"telemetry.tracing.sampling_ratio must be within [0, 1], got {sampling_ratio}"
        )
    if not otlp_timeout_s > 0:
        raise TracingSetupError(
            f"telemetry.tracing.otlp_timeout_s must be positive, got {otlp_timeout_s}"
        )
    if otlp_protocol not in OTLP_PROTOCOLS:
        raise TracingSetupError(
            f"telemetry.tracing.otlp_protocol {otlp_protocol!r} is not supported: "
            f"use one of {', '.join(OTLP_PROTOCOLS)}"
        )
    url = None if otlp_endpoint is None else _validated_endpoint(otlp_endpoint, otlp_protocol)
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
        from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
        from opentelemetry.sdk.trace.sampling import TraceIdRatioBased
    except ImportError:
        raise TracingSetupError(
            "telemetry.tracing.otlp_endpoint is set, but the OpenTelemetry SDK is not "
            "installed: pip install 'tradeengine[otlp]'"
        ) from None

    class _ContractIdGenerator(RandomIdGenerator):
        """Hands out the contract's trace id (and derived span id) for the root span being
        started by `ChainTracer.source_event`; random ids otherwise."""

        def __init__(self) -> None:
            # A private generator: the SDK's default draws from the global `random`, which a
            # plugin may seed or use, and tracing must never change what a plugin draws.
            self._random = random.Random()

        def generate_trace_id(self) -> int:
            pending = _ROOT_IDS.get()
            if pending is not None:
                return pending[0]
            trace_id = self._random.getrandbits(128)
            while trace_id == 0:
                trace_id = self._random.getrandbits(128)
            return trace_id

        def generate_span_id(self) -> int:
            pending = _ROOT_IDS.get()
            if pending is not None:
                return pending[1]
            span_id = self._random.getrandbits(64)
            while span_id == 0:
                span_id = self._random.getrandbits(64)
            return span_id

        def is_trace_id_random(self) -> bool:
            return False  # contract ids come from a seeded generator, not a W3C random source

    if exporter is None:
        assert url is not None
        exporter = _otlp_exporter(url, otlp_protocol, otlp_timeout_s)
        target = f"{otlp_protocol} {url}"
    else:
        target = type(exporter).__name__
    monitor = _ExportMonitor(log=log, on_state=on_export_state, target=target)
    counting = _counting_exporter(exporter, monitor)
    processor: SpanProcessor = (
        SimpleSpanProcessor(counting)
        if simple_processor
        else BatchSpanProcessor(
            counting,
            # A replay makes spans in bursts far above the SDK's default 2,048-span queue;
            # a full queue drops spans (the SDK logs it), so leave room for a burst.
            max_queue_size=BATCH_QUEUE_SIZE,
            max_export_batch_size=BATCH_EXPORT_SIZE,
            schedule_delay_millis=1000,
            export_timeout_millis=otlp_timeout_s * 1000,
        )
    )
    provider = TracerProvider(
        sampler=TraceIdRatioBased(sampling_ratio),
        resource=Resource.create({"service.name": SERVICE_NAME}),
        id_generator=_ContractIdGenerator(),
        # Tracing.stop flushes; an atexit hook would keep every provider alive and could hold
        # interpreter exit for the batch processor's 30 s against a dead collector.
        shutdown_on_exit=False,
    )
    provider.add_span_processor(processor)
    chain = ChainTracer(
        provider.get_tracer(INSTRUMENTATION_NAME),
        recording=True,
        sampling_ratio=sampling_ratio,
        max_index=max_index,
    )
    log.info(
        "tracing enabled", target=target, sampling_ratio=sampling_ratio, batch=not simple_processor
    )
    return Tracing(
        chain,
        provider=provider,
        log=log,
        sdk_provider=provider,
        exporter=counting,
        monitor=monitor,
        shutdown_timeout_s=otlp_timeout_s,
    )


def _otlp_exporter(url: str, protocol: str, timeout_s: float) -> SpanExporter:
    try:
        if protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
                OTLPSpanExporter as GrpcExporter,
            )

            return GrpcExporter(endpoint=url, insecure=url.startswith("http://"), timeout=timeout_s)
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter as HttpExporter,
        )

        return HttpExporter(endpoint=url, timeout=timeout_s)
    except ImportError:
        raise TracingSetupError(
            f"telemetry.tracing.otlp_protocol is {protocol!r}, but its OpenTelemetry exporter is "
            "not installed: pip install 'tradeengine[otlp]'"
        ) from None
