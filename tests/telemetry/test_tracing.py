"""Tracing of the decision chain: one trace per source event, with real parent/child links."""

from __future__ import annotations

import socket
import sys
import threading
import time
from collections.abc import Sequence
from concurrent import futures
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import TraceIdRatioBased
from opentelemetry.trace import NoOpTracerProvider
from structlog.testing import capture_logs

from contracts import (
    Contribution,
    DecisionLog,
    Fill,
    IdGenerator,
    Intent,
    Opportunity,
    Order,
    Signal,
)
from engine.telemetry.logging import get_logger
from engine.telemetry.tracing import (
    ChainTracer,
    Tracing,
    TracingSetupError,
    build_tracing,
    root_span_id,
)

T0 = datetime(2024, 1, 2, 21, 0, tzinfo=UTC)
HASH = "ab" * 32
_ids = IdGenerator(7)


# --------------------------------------------------------------------------------- builders


def _env(trace_id: str) -> dict[str, Any]:
    return {"trace_id": trace_id, "ts_event": T0, "ts_init": T0}


def _signal(trace_id: str, agent: str, symbol: str = "AAPL") -> Signal:
    return Signal(
        **_env(trace_id),
        agent=agent,
        symbol=symbol,
        mu=0.01,
        sigma=0.05,
        horizon="1m",
        confidence=0.7,
    )


def _contribution(agent: str, signal_trace_id: str) -> Contribution:
    return Contribution(
        agent=agent,
        weight=0.5,
        mu=0.01,
        sigma=0.05,
        confidence=0.7,
        signal_trace_id=signal_trace_id,
    )


def _opportunity(trace_id: str, *contributions: Contribution, symbol: str = "AAPL") -> Opportunity:
    return Opportunity(
        **_env(trace_id),
        symbol=symbol,
        horizon="1m",
        mu=0.01,
        sigma=0.05,
        contributions=contributions,
        blender="precision",
        model_version="v1",
    )


def _intent(trace_id: str, *, effect: str = "open", symbol: str = "AAPL") -> Intent:
    return Intent(
        **_env(trace_id),
        intent_id=_ids.trace_id(),
        symbol=symbol,
        side="buy" if effect == "open" else "sell",
        effect=effect,
        quantity=10.0,
        price_ref=190.0,
        notional=1900.0,
        horizon="1m",
        risk_budget=50.0,
        expires_at=T0 + timedelta(days=1),
    )


def _intent_decision(intent: Intent) -> DecisionLog:
    return DecisionLog(
        **_env(intent.trace_id),
        decision_id=_ids.trace_id(),
        kind="intent",
        symbol=intent.symbol,
        intent=intent,
        model_version="v1",
        config_hash=HASH,
    )


def _denial(trace_id: str, symbol: str = "AAPL") -> DecisionLog:
    return DecisionLog(
        **_env(trace_id),
        decision_id=_ids.trace_id(),
        kind="denial",
        symbol=symbol,
        reason="max_positions",
        detail="10 positions open",
        model_version="v1",
        config_hash=HASH,
    )


def _no_trade(trace_id: str) -> DecisionLog:
    return DecisionLog(
        **_env(trace_id),
        decision_id=_ids.trace_id(),
        kind="no_trade",
        model_version="v1",
        config_hash=HASH,
    )


def _order(intent: Intent) -> Order:
    return Order(
        **_env(intent.trace_id),
        order_id=_ids.trace_id(),
        intent_id=intent.intent_id,
        symbol=intent.symbol,
        side=intent.side,
        quantity=intent.quantity,
        order_type="market",
    )


def _fill(order: Order) -> Fill:
    return Fill(
        **_env(order.trace_id),
        fill_id=_ids.trace_id(),
        order_id=order.order_id,
        symbol=order.symbol,
        side=order.side,
        quantity=order.quantity,
        price=190.1,
        fee=1.0,
    )


def _source(chain: ChainTracer, trace_id: str, symbol: str = "AAPL") -> None:
    chain.source_event(trace_id, kind="bar", source="replay", symbol=symbol, ts_event=T0)


def _in_memory(**kwargs: Any) -> tuple[Tracing, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    options: dict[str, Any] = {
        "enabled": True,
        "sampling_ratio": 1.0,
        "otlp_endpoint": None,
        "log": get_logger("tracing"),
        "exporter": exporter,
        "simple_processor": True,
        **kwargs,
    }
    return build_tracing(**options), exporter


def _by_name(spans: Sequence[ReadableSpan]) -> dict[str, ReadableSpan]:
    named = {span.name: span for span in spans}
    assert len(named) == len(spans), [span.name for span in spans]
    return named


def _attr(span: ReadableSpan, key: str) -> object:
    return (span.attributes or {}).get(key)


def _parent_id(span: ReadableSpan) -> int:
    assert span.parent is not None, f"{span.name} has no parent"
    return int(span.parent.span_id)


def _span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return int(span.context.span_id)


def _trace_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return int(span.context.trace_id)


def _chain(chain: ChainTracer, trace_id: str) -> None:
    """source -> signal x2 -> opportunity -> selection -> intent -> order -> fill."""
    _source(chain, trace_id)
    chain.signal(_signal(trace_id, "momentum"))
    chain.signal(_signal(trace_id, "value"))
    opp = _opportunity(
        trace_id, _contribution("momentum", trace_id), _contribution("value", trace_id)
    )
    chain.opportunity(opp)
    chain.selection(opp, selected=True, rank=1, score=0.8)
    intent = _intent(trace_id)
    chain.decision(_intent_decision(intent))
    order = _order(intent)
    chain.order(order)
    chain.fill(_fill(order))


class _Explodes:
    """Stands in for a contract: any attribute access fails, proving nothing was read."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"attribute {name!r} read while not recording")


class _SwitchableExporter(SpanExporter):
    def __init__(self) -> None:
        self.result = SpanExportResult.FAILURE
        self.error: Exception | None = None

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self.error is not None:
            raise self.error
        return self.result


def _unused_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _trace_with_low_bits(low: int) -> str:
    """A trace id whose sampling decision (low 64 bits) is `low`."""
    return f"{0x1234:016x}{low:016x}"


# ------------------------------------------------------------------------------- the chain


def test_trace_when_full_chain_recorded_then_one_trace_with_parent_links() -> None:
    # Arrange
    tracing, exporter = _in_memory()
    trace_id = _ids.trace_id()

    # Act
    _chain(tracing.chain, trace_id)

    # Assert
    spans = exporter.get_finished_spans()
    names = [span.name for span in spans]
    assert names == [
        "source.bar",
        "signal",
        "signal",
        "opportunity",
        "selection",
        "intent",
        "order",
        "fill",
    ]
    assert {_trace_id(span) for span in spans} == {int(trace_id, 16)}
    named = {span.name: span for span in spans if span.name != "signal"}
    signals = {_attr(span, "tradeengine.agent"): span for span in spans if span.name == "signal"}
    source = named["source.bar"]
    assert source.parent is None
    assert _span_id(source) == root_span_id(trace_id)
    assert _parent_id(signals["momentum"]) == _span_id(source)
    assert _parent_id(signals["value"]) == _span_id(source)
    opportunity = named["opportunity"]
    assert _parent_id(opportunity) == _span_id(signals["momentum"])
    assert [link.context.span_id for link in opportunity.links] == [_span_id(signals["value"])]
    assert _parent_id(named["selection"]) == _span_id(opportunity)
    assert _parent_id(named["intent"]) == _span_id(named["selection"])
    assert _parent_id(named["order"]) == _span_id(named["intent"])
    assert _parent_id(named["fill"]) == _span_id(named["order"])
    assert tracing.chain.span_id_for(trace_id) == f"{_span_id(named['fill']):016x}"
    assert tracing.spans_exported == len(spans) == 8


def test_spans_when_recorded_then_attributes_describe_each_step() -> None:
    # Arrange
    tracing, exporter = _in_memory()
    trace_id = _ids.trace_id()

    # Act
    _chain(tracing.chain, trace_id)

    # Assert
    spans = exporter.get_finished_spans()
    attrs = {span.name: dict(span.attributes or {}) for span in spans}
    assert attrs["source.bar"]["tradeengine.ts_event"] == T0.isoformat()
    assert attrs["source.bar"]["tradeengine.source"] == "replay"
    assert attrs["signal"]["tradeengine.mu"] == 0.01
    assert attrs["signal"]["tradeengine.horizon"] == "1m"
    assert attrs["selection"]["tradeengine.selected"] is True
    assert attrs["selection"]["tradeengine.rank"] == 1
    assert attrs["intent"]["tradeengine.side"] == "buy"
    assert attrs["intent"]["tradeengine.quantity"] == 10.0
    assert attrs["fill"]["tradeengine.fee"] == 1.0
    assert attrs["fill"]["tradeengine.price"] == 190.1
    assert attrs["order"]["tradeengine.order_id"] == attrs["fill"]["tradeengine.order_id"]


def test_opportunity_when_contribution_from_other_trace_then_linked_to_that_signal() -> None:
    # Arrange
    tracing, exporter = _in_memory()
    chain = tracing.chain
    main, other = _ids.trace_id(), _ids.trace_id()
    for trace_id, agent in ((main, "momentum"), (other, "macro")):
        _source(chain, trace_id)
        chain.signal(_signal(trace_id, agent))
    opp = _opportunity(main, _contribution("momentum", main), _contribution("macro", other))

    # Act
    chain.opportunity(opp)

    # Assert
    spans = exporter.get_finished_spans()
    macro = next(s for s in spans if _attr(s, "tradeengine.agent") == "macro")
    opportunity = next(s for s in spans if s.name == "opportunity")
    assert _trace_id(opportunity) == int(main, 16)
    assert [(link.context.trace_id, link.context.span_id) for link in opportunity.links] == [
        (int(other, 16), _span_id(macro))
    ]


def test_decision_when_denied_then_denial_span_with_reason_under_selection() -> None:
    # Arrange
    tracing, exporter = _in_memory()
    chain = tracing.chain
    trace_id = _ids.trace_id()
    _source(chain, trace_id)
    chain.signal(_signal(trace_id, "momentum"))
    opp = _opportunity(trace_id, _contribution("momentum", trace_id))
    chain.opportunity(opp)
    chain.selection(opp, selected=True, rank=2, score=None)

    # Act
    chain.decision(_denial(trace_id))

    # Assert
    named = _by_name(exporter.get_finished_spans())
    denial = named["denial"]
    assert denial.attributes is not None
    assert denial.attributes["tradeengine.reason"] == "max_positions"
    assert _parent_id(denial) == _span_id(named["selection"])
    assert _trace_id(denial) == int(trace_id, 16)
    assert "tradeengine.score" not in (named["selection"].attributes or {})


def test_decision_when_no_selection_then_parent_is_opportunity() -> None:
    # Arrange
    tracing, exporter = _in_memory()
    chain = tracing.chain
    trace_id = _ids.trace_id()
    opp = _opportunity(trace_id, _contribution("momentum", trace_id))
    chain.opportunity(opp)

    # Act
    chain.decision(_denial(trace_id))

    # Assert
    named = _by_name(exporter.get_finished_spans())
    assert _parent_id(named["denial"]) == _span_id(named["opportunity"])


def test_decision_when_no_trade_then_no_span() -> None:
    # Arrange
    tracing, exporter = _in_memory()

    # Act
    tracing.chain.decision(_no_trade(_ids.trace_id()))

    # Assert
    assert exporter.get_finished_spans() == ()


def test_order_when_exit_starts_its_own_trace_then_intent_is_the_real_root() -> None:
    # Arrange
    tracing, exporter = _in_memory()
    chain = tracing.chain
    trace_id = _ids.trace_id()  # the entry's trace: nothing of it was recorded here
    intent = _intent(trace_id, effect="close")
    order = _order(intent)

    # Act
    chain.decision(_intent_decision(intent))
    chain.order(order)
    chain.fill(_fill(order))
    chain.order(_order(_intent(trace_id, effect="close")))  # an order of an unknown intent

    # Assert
    spans = exporter.get_finished_spans()
    assert [span.name for span in spans] == ["intent", "order", "fill", "order"]
    assert {_trace_id(span) for span in spans} == {int(trace_id, 16)}
    intent_span, order_span, fill_span, orphan = spans
    # no "missing parent" in a trace viewer: the exit's intent is its trace's root
    assert intent_span.parent is None
    assert _span_id(intent_span) == root_span_id(trace_id)
    assert _parent_id(order_span) == _span_id(intent_span)
    assert _parent_id(fill_span) == _span_id(order_span)
    assert _parent_id(orphan) == root_span_id(trace_id)


def test_decision_when_only_source_recorded_then_parent_is_source_span() -> None:
    # Arrange
    tracing, exporter = _in_memory()
    chain = tracing.chain
    trace_id = _ids.trace_id()
    _source(chain, trace_id)

    # Act
    chain.decision(_intent_decision(_intent(trace_id, effect="close")))

    # Assert
    named = _by_name(exporter.get_finished_spans())
    assert _parent_id(named["intent"]) == _span_id(named["source.bar"])


# -------------------------------------------------------------------------------- sampling


def test_sampling_when_ratio_zero_then_nothing_exported() -> None:
    # Arrange
    tracing, exporter = _in_memory(sampling_ratio=0.0)
    trace_id = _ids.trace_id()

    # Act
    _chain(tracing.chain, trace_id)

    # Assert
    assert exporter.get_finished_spans() == ()
    assert tracing.chain.span_id_for(trace_id) is None
    assert tracing.chain.index_size == 0


def test_sampling_when_ratio_one_then_everything_exported() -> None:
    # Arrange
    tracing, exporter = _in_memory(sampling_ratio=1.0)
    trace_ids = [_ids.trace_id() for _ in range(20)]

    # Act
    for trace_id in trace_ids:
        _chain(tracing.chain, trace_id)

    # Assert
    assert len(exporter.get_finished_spans()) == 8 * len(trace_ids)


def test_sampling_when_ratio_half_then_each_trace_kept_or_dropped_whole() -> None:
    # Arrange
    tracing, exporter = _in_memory(sampling_ratio=0.5)
    bound = TraceIdRatioBased.get_bound_for_rate(0.5)
    kept, dropped = _trace_with_low_bits(bound - 1), _trace_with_low_bits(bound)

    # Act
    _chain(tracing.chain, kept)
    _chain(tracing.chain, dropped)

    # Assert
    spans = exporter.get_finished_spans()
    assert len(spans) == 8
    assert {_trace_id(span) for span in spans} == {int(kept, 16)}


# --------------------------------------------------------------------------- not recording


@pytest.mark.parametrize(
    ("enabled", "with_exporter"),
    [(False, True), (True, False)],
    ids=["disabled", "nowhere-to-export"],
)
async def test_methods_when_not_recording_then_no_ops_without_sdk_provider(
    enabled: bool, with_exporter: bool
) -> None:
    # Arrange
    exporter = InMemorySpanExporter()
    tracing = build_tracing(
        enabled=enabled,
        sampling_ratio=1.0,
        otlp_endpoint=None,
        log=get_logger("tracing"),
        exporter=exporter if with_exporter else None,
    )
    chain = tracing.chain
    explodes = cast(Any, _Explodes())
    trace_id = _ids.trace_id()

    # Act
    async with tracing:
        _chain(chain, trace_id)
        chain.signal(explodes)
        chain.opportunity(explodes)
        chain.selection(explodes, selected=True, rank=None, score=None)
        chain.decision(explodes)
        chain.order(explodes)
        chain.fill(explodes)
        span_id = chain.span_id_for(trace_id)

    # Assert
    assert tracing.recording is False
    assert isinstance(tracing.provider, NoOpTracerProvider)
    assert span_id is None
    assert exporter.get_finished_spans() == ()
    assert (tracing.spans_exported, tracing.export_failures) == (0, 0)


def test_chain_when_disabled_factory_then_records_nothing() -> None:
    # Arrange
    chain = ChainTracer.disabled()
    trace_id = _ids.trace_id()

    # Act
    _chain(chain, trace_id)

    # Assert
    assert chain.recording is False
    assert chain.span_id_for(trace_id) is None
    assert chain.index_size == 0


# ---------------------------------------------------------------------------- export health


def test_export_when_exporter_fails_then_counted_and_state_reported_once_per_transition() -> None:
    # Arrange
    states: list[tuple[bool, str]] = []
    failing = _SwitchableExporter()
    tracing, _ = _in_memory(
        exporter=failing, on_export_state=lambda ok, reason: states.append((ok, reason))
    )
    chain = tracing.chain

    # Act
    with capture_logs() as logs:
        _chain(chain, _ids.trace_id())
        failures = tracing.export_failures
        failing.result = SpanExportResult.SUCCESS
        _chain(chain, _ids.trace_id())

    # Assert
    assert failures == 8
    assert tracing.export_failures == 8
    assert tracing.spans_exported == 8
    assert [ok for ok, _ in states] == [False, True]
    assert "FAILURE" in states[0][1]
    assert states[1] == (True, "")
    events = [(e["log_level"], e["event"]) for e in logs if "export" in e["event"]]
    assert events == [
        ("warning", "tracing export failing"),
        ("info", "tracing export recovered"),
    ]


def test_export_when_exporter_raises_then_counted_and_engine_call_does_not_raise() -> None:
    # Arrange
    states: list[tuple[bool, str]] = []
    raising = _SwitchableExporter()
    raising.error = ConnectionError("collector gone")
    tracing, _ = _in_memory(
        exporter=raising, on_export_state=lambda ok, reason: states.append((ok, reason))
    )

    # Act
    _chain(tracing.chain, _ids.trace_id())

    # Assert
    assert tracing.export_failures == 8
    assert states == [(False, "ConnectionError: collector gone")]


async def test_export_state_when_exported_off_loop_then_callback_runs_on_loop() -> None:
    # Arrange
    threads: list[int] = []
    tracing, _ = _in_memory(
        exporter=_SwitchableExporter(),
        simple_processor=False,
        on_export_state=lambda ok, reason: threads.append(threading.get_ident()),
    )

    # Act
    async with tracing:
        _chain(tracing.chain, _ids.trace_id())
    # (stop flushed the batch on the SDK's thread, which reported the failure)

    # Assert
    assert tracing.export_failures == 1
    assert threads == [threading.get_ident()]


async def test_stop_when_called_twice_or_without_start_then_idempotent() -> None:
    # Arrange
    tracing, exporter = _in_memory()
    _chain(tracing.chain, _ids.trace_id())

    # Act
    await tracing.stop()
    await tracing.stop()
    _chain(tracing.chain, _ids.trace_id())  # after stop: a no-op, not an SDK warning per span

    # Assert
    assert tracing.recording is False
    assert len(exporter.get_finished_spans()) == 8


# ----------------------------------------------------------------------------- OTLP set-up


@pytest.mark.parametrize(
    ("endpoint", "protocol"),
    [
        ("localhost:4317", "grpc"),
        ("collector", "grpc"),
        ("ftp://collector:4317", "grpc"),
        ("http://collector", "grpc"),
        ("http://collector:99999", "grpc"),
        ("http://collector:4317/v1/traces", "grpc"),
        ("http://:4318", "http/protobuf"),
        ("http://collector:4318?x=1", "http/protobuf"),
    ],
)
def test_build_when_endpoint_malformed_then_setup_error_names_it(
    endpoint: str, protocol: str
) -> None:
    # Arrange / Act
    with pytest.raises(TracingSetupError) as caught:
        build_tracing(
            enabled=True,
            sampling_ratio=1.0,
            otlp_endpoint=endpoint,
            otlp_protocol=protocol,
            log=get_logger("tracing"),
        )

    # Assert
    message = str(caught.value)
    assert repr(endpoint) in message
    assert "\n" not in message


def test_build_when_protocol_unknown_then_setup_error() -> None:
    # Arrange / Act
    with pytest.raises(TracingSetupError, match="otlp_protocol 'thrift'"):
        build_tracing(
            enabled=True,
            sampling_ratio=1.0,
            otlp_endpoint="http://127.0.0.1:4317",
            otlp_protocol="thrift",
            log=get_logger("tracing"),
        )


def test_build_when_sdk_missing_then_setup_error_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Arrange
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)

    # Act
    with pytest.raises(TracingSetupError) as caught:
        build_tracing(
            enabled=True,
            sampling_ratio=1.0,
            otlp_endpoint="http://127.0.0.1:4317",
            log=get_logger("tracing"),
        )

    # Assert
    assert str(caught.value) == (
        "telemetry.tracing.otlp_endpoint is set, but the OpenTelemetry SDK is not installed: "
        "pip install 'tradeengine[otlp]'"
    )


class _Collector:
    """A minimal OTLP collector (gRPC or HTTP/protobuf) keeping the requests it receives."""

    def __init__(self, protocol: str) -> None:
        self.requests: list[trace_service_pb2.ExportTraceServiceRequest] = []
        self.paths: list[str] = []
        self._protocol = protocol
        self._grpc: grpc.Server | None = None
        self._http: ThreadingHTTPServer | None = None

    def __enter__(self) -> str:
        collector = self
        if self._protocol == "grpc":

            class Service(trace_service_pb2_grpc.TraceServiceServicer):
                def Export(
                    self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
                ) -> trace_service_pb2.ExportTraceServiceResponse:
                    collector.requests.append(request)
                    return trace_service_pb2.ExportTraceServiceResponse()

            self._grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
            trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Service(), self._grpc)
            port = self._grpc.add_insecure_port("127.0.0.1:0")
            self._grpc.start()
            return f"http://127.0.0.1:{port}"

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                collector.paths.append(self.path)
                collector.requests.append(
                    trace_service_pb2.ExportTraceServiceRequest.FromString(body)
                )
                reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._http.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self._http.server_address[1]}"

    def __exit__(self, *exc: object) -> None:
        if self._grpc is not None:
            self._grpc.stop(None)
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()

    def spans(self) -> list[tuple[str, bytes, str]]:
        """(service.name, trace id, span name) of every span received."""
        received = []
        for request in self.requests:
            for resource_spans in request.resource_spans:
                service = next(
                    a.value.string_value
                    for a in resource_spans.resource.attributes
                    if a.key == "service.name"
                )
                for scope_spans in resource_spans.scope_spans:
                    received += [(service, s.trace_id, s.name) for s in scope_spans.spans]
        return received


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
async def test_stop_when_collector_reachable_then_chain_exported_with_contract_trace_id(
    protocol: str,
) -> None:
    # Arrange
    states: list[tuple[bool, str]] = []
    trace_id = _ids.trace_id()
    collector = _Collector(protocol)

    # Act
    with collector as endpoint:
        tracing = build_tracing(
            enabled=True,
            sampling_ratio=1.0,
            otlp_endpoint=endpoint,
            otlp_protocol=protocol,
            otlp_timeout_s=5.0,
            log=get_logger("tracing"),
            on_export_state=lambda ok, reason: states.append((ok, reason)),
        )
        async with tracing:
            _chain(tracing.chain, trace_id)

    # Assert
    received = collector.spans()
    assert len(received) == 8
    assert {(service, tid) for service, tid, _ in received} == {
        ("tradeengine", bytes.fromhex(trace_id))
    }
    assert collector.paths == ([] if protocol == "grpc" else ["/v1/traces"])
    assert (tracing.spans_exported, tracing.export_failures) == (8, 0)
    assert states == []


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
async def test_stop_when_collector_unreachable_then_failure_recorded_within_timeout(
    protocol: str,
) -> None:
    # Arrange
    states: list[tuple[bool, str]] = []
    endpoint = f"http://127.0.0.1:{_unused_port()}"
    tracing = build_tracing(
        enabled=True,
        sampling_ratio=1.0,
        otlp_endpoint=endpoint,
        otlp_protocol=protocol,
        otlp_timeout_s=1.0,
        log=get_logger("tracing"),
        on_export_state=lambda ok, reason: states.append((ok, reason)),
    )
    started = time.monotonic()

    # Act
    async with tracing:
        for _ in range(3):
            _chain(tracing.chain, _ids.trace_id())
    elapsed = time.monotonic() - started

    # Assert
    assert tracing.recording is False
    assert tracing.export_failures >= 1
    assert tracing.spans_exported == 0
    assert [ok for ok, _ in states] == [False]
    assert elapsed < 8.0


# ----------------------------------------------------------------------------------- index


def test_index_when_more_spans_than_max_then_bounded_and_oldest_evicted() -> None:
    # Arrange
    tracing, exporter = _in_memory(max_index=10)
    chain = tracing.chain
    trace_ids = [_ids.trace_id() for _ in range(50)]

    # Act
    for trace_id in trace_ids:
        _chain(chain, trace_id)

    # Assert
    assert chain.index_size <= 10
    assert chain.span_id_for(trace_ids[0]) is None
    assert chain.span_id_for(trace_ids[-1]) is not None
    last = [s for s in exporter.get_finished_spans() if _trace_id(s) == int(trace_ids[-1], 16)]
    named = {span.name: span for span in last}
    assert _parent_id(named["fill"]) == _span_id(named["order"])
    assert len(exporter.get_finished_spans()) == 8 * len(trace_ids)


def test_opportunity_when_agents_share_the_bar_then_parent_is_the_highest_weight_signal() -> None:
    # Arrange: both agents reacted to the same bar (same trace); "zeta" weighs more
    tracing, exporter = _in_memory()
    chain = tracing.chain
    trace_id = _ids.trace_id()
    _source(chain, trace_id)
    chain.signal(_signal(trace_id, "alpha"))
    chain.signal(_signal(trace_id, "zeta"))
    light = _contribution("alpha", trace_id).model_copy(update={"weight": 0.2})
    heavy = _contribution("zeta", trace_id).model_copy(update={"weight": 0.8})
    # Act
    chain.opportunity(_opportunity(trace_id, light, heavy))
    # Assert
    spans = exporter.get_finished_spans()
    signals = {_attr(s, "tradeengine.agent"): s for s in spans if s.name == "signal"}
    (opportunity,) = [s for s in spans if s.name == "opportunity"]
    assert _parent_id(opportunity) == _span_id(signals["zeta"])
    assert _attr(opportunity, "tradeengine.agent") == "zeta"
    assert [link.context.span_id for link in opportunity.links] == [_span_id(signals["alpha"])]


def test_opportunity_when_agent_signals_several_symbols_per_event_then_parent_has_its_symbol() -> (
    None
):
    # Arrange: one agent, one event, two symbols (e.g. a macro event moving many stocks)
    tracing, exporter = _in_memory()
    chain = tracing.chain
    trace_id = _ids.trace_id()
    _source(chain, trace_id)
    chain.signal(_signal(trace_id, "macro", symbol="AAPL"))
    chain.signal(_signal(trace_id, "macro", symbol="MSFT"))
    # Act
    chain.opportunity(_opportunity(trace_id, _contribution("macro", trace_id), symbol="AAPL"))
    # Assert
    spans = exporter.get_finished_spans()
    signals = {_attr(s, "tradeengine.symbol"): s for s in spans if s.name == "signal"}
    (opportunity,) = [s for s in spans if s.name == "opportunity"]
    assert _parent_id(opportunity) == _span_id(signals["AAPL"])
