"""Tests of the message contracts, and the Hypothesis strategies and examples they share.

The strategies generate *valid* field values only (invalid inputs are made by mutating a valid
one in the tests), and reach the edges on purpose: extreme float magnitudes, subnormals, negative
zero, datetimes in odd UTC offsets, long and unusual symbols.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import strategies as st

from contracts import (
    AgentState,
    AgentStatus,
    Bar,
    BarInterval,
    Contract,
    Contribution,
    DecisionKind,
    DecisionLog,
    DenialReason,
    Fill,
    Horizon,
    Intent,
    LiquiditySide,
    MacroObservation,
    Opportunity,
    Order,
    OrderStatus,
    OrderType,
    PositionEffect,
    Quantile,
    Regime,
    RunControl,
    Side,
    Signal,
    SocialPost,
    TimeInForce,
    Watermark,
)

# --- scalars --------------------------------------------------------------------------------

EXTREME_FLOATS = (
    0.0,
    -0.0,
    5e-324,  # smallest subnormal
    -5e-324,
    2.2250738585072014e-308,  # smallest normal
    1.7976931348623157e308,  # largest finite
    -1.7976931348623157e308,
    1e-300,
    -1e300,
)

finite_floats = st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from(EXTREME_FLOATS)
positive_floats = st.floats(
    min_value=0.0, exclude_min=True, allow_infinity=False
) | st.sampled_from((5e-324, 1.7976931348623157e308, 1e-12, 1.0))
non_negative_floats = positive_floats | st.sampled_from((0.0, -0.0))
probabilities = st.floats(min_value=0.0, max_value=1.0) | st.sampled_from((0.0, -0.0, 1.0))

HEX = "0123456789abcdef"

trace_ids = st.integers(min_value=1, max_value=2**128 - 1).map(
    lambda v: f"{v:032x}"
) | st.from_regex(r"[0-9a-f]{32}", fullmatch=True).filter(lambda s: s.strip("0") != "")
identifiers = st.from_regex(r"[0-9a-f]{32}", fullmatch=True)
sha256_hex = st.from_regex(r"[0-9a-f]{64}", fullmatch=True)
names = st.from_regex(r"[a-z][a-z0-9_]{0,63}", fullmatch=True)
symbols = st.sampled_from(("AAPL", "BRK.B", "EUR/USD", "^GSPC", "SP500", "X")) | st.from_regex(
    r"[A-Za-z0-9^][A-Za-z0-9._/:^=-]{0,31}", fullmatch=True
)
feature_names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_.:-]{0,127}", fullmatch=True)
currencies = st.from_regex(r"[A-Z]{3}", fullmatch=True)
texts = st.text(st.characters(codec="utf-8"), max_size=40)

utc_offsets = st.builds(
    timezone,
    st.timedeltas(
        min_value=timedelta(hours=-23, minutes=-59, seconds=-59),
        max_value=timedelta(hours=23, minutes=59, seconds=59),
    ),
)
timezones = (
    st.just(UTC)
    | st.sampled_from(
        (timezone(timedelta(hours=1)), timezone(timedelta(hours=-5)), timezone(timedelta(hours=14)))
    )
    | utc_offsets
)

# A day of margin at both ends, so converting any offset to UTC stays inside datetime's range;
# the upper bound leaves room for expiry deltas.
MIN_DT = datetime(1, 1, 2)
MAX_DT = datetime(9000, 1, 1)
aware_datetimes = st.datetimes(min_value=MIN_DT, max_value=MAX_DT, timezones=timezones)
naive_datetimes = st.datetimes(min_value=MIN_DT, max_value=MAX_DT)


def envelopes() -> st.SearchStrategy[dict[str, Any]]:
    """trace_id, ts_event and ts_init of a contract."""
    return st.fixed_dictionaries(
        {"trace_id": trace_ids, "ts_event": aware_datetimes, "ts_init": aware_datetimes}
    )


# --- Signal -----------------------------------------------------------------------------------


@st.composite
def signal_kwargs(draw: st.DrawFn) -> dict[str, Any]:
    kwargs = draw(envelopes())
    kwargs.update(
        agent=draw(names),
        symbol=draw(symbols),
        mu=draw(finite_floats),
        sigma=draw(positive_floats),
        horizon=draw(st.sampled_from(Horizon) | st.sampled_from([h.value for h in Horizon])),
        confidence=draw(probabilities),
    )
    if draw(st.booleans()):
        kwargs["regime"] = draw(st.sampled_from(Regime))
    if draw(st.booleans()):
        kwargs["features"] = draw(
            st.none() | st.dictionaries(feature_names, finite_floats, max_size=6)
        )
    return kwargs


signals = signal_kwargs().map(lambda kw: Signal(**kw))

# --- market data ------------------------------------------------------------------------------


@st.composite
def bars(draw: st.DrawFn, close_only: bool | None = None) -> Bar:
    env = draw(envelopes())
    common: dict[str, Any] = {
        "symbol": draw(symbols),
        "interval": draw(st.sampled_from(BarInterval)),
        "currency": draw(currencies),
    }
    if close_only is None:
        close_only = draw(st.booleans())
    if close_only:
        return Bar(**env, **common, close=draw(positive_floats))
    low, a, b, high = sorted(draw(st.lists(positive_floats, min_size=4, max_size=4)))
    open_, close = draw(st.permutations((a, b)))
    # Any of open/high/low may be unknown; the known ones must still be consistent.
    maybe = st.booleans()
    return Bar(
        **env,
        **common,
        open=open_ if draw(maybe) else None,
        high=high if draw(maybe) else None,
        low=low if draw(maybe) else None,
        close=close,
        volume=draw(st.none() | non_negative_floats),
    )


@st.composite
def _macro_observations(draw: st.DrawFn) -> MacroObservation:
    return MacroObservation(
        **draw(envelopes()),
        series=draw(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}", fullmatch=True)),
        value=draw(finite_floats),
        unit=draw(st.text(max_size=32)),
        source=draw(st.text(max_size=64)),
    )


macro_observations = _macro_observations()


@st.composite
def _social_posts(draw: st.DrawFn) -> SocialPost:
    return SocialPost(
        **draw(envelopes()),
        source=draw(st.from_regex(r"[a-z][a-z0-9_]{0,31}", fullmatch=True)),
        post_id=draw(st.text(min_size=1, max_size=128)),
        channel=draw(st.text(max_size=128)),
        author=draw(st.none() | st.text(max_size=128)),
        title=draw(texts),
        text=draw(st.text(max_size=400)),
        symbols=tuple(draw(st.lists(symbols, max_size=5))),
        score=draw(st.integers(min_value=-(2**63), max_value=2**63 - 1)),
        url=draw(st.none() | st.text(max_size=200)),
    )


social_posts = _social_posts()


@st.composite
def _watermarks(draw: st.DrawFn) -> Watermark:
    return Watermark(**draw(envelopes()), origin=draw(names))


watermarks = _watermarks()

# --- trading path -----------------------------------------------------------------------------

quantile_levels = st.floats(min_value=0.0, max_value=1.0, exclude_min=True, exclude_max=True)


@st.composite
def quantile_sets(draw: st.DrawFn) -> tuple[Quantile, ...]:
    """Strictly increasing levels with non-decreasing (non-crossing) values."""
    levels = sorted(draw(st.sets(quantile_levels, max_size=7)))
    values = sorted(draw(st.lists(finite_floats, min_size=len(levels), max_size=len(levels))))
    return tuple(Quantile(level=lv, value=v) for lv, v in zip(levels, values, strict=True))


contributions = st.builds(
    Contribution,
    agent=names,
    weight=finite_floats,
    mu=finite_floats,
    sigma=positive_floats,
    confidence=probabilities,
    signal_trace_id=trace_ids,
)


@st.composite
def _opportunities(draw: st.DrawFn) -> Opportunity:
    return Opportunity(
        **draw(envelopes()),
        symbol=draw(symbols),
        horizon=draw(st.sampled_from(Horizon)),
        mu=draw(finite_floats),
        sigma=draw(positive_floats),
        quantiles=draw(quantile_sets()),
        contributions=tuple(draw(st.lists(contributions, min_size=1, max_size=4))),
        regime=draw(st.sampled_from(Regime)),
        var=draw(st.none() | non_negative_floats),
        cvar=draw(st.none() | non_negative_floats),
        blender=draw(st.text(min_size=1, max_size=64)),
        model_version=draw(st.text(min_size=1, max_size=128)),
    )


opportunities = _opportunities()


@st.composite
def _intents(draw: st.DrawFn) -> Intent:
    env = draw(envelopes())
    order_type = draw(st.sampled_from(OrderType))
    needs_limit = order_type in (OrderType.LIMIT, OrderType.STOP_LIMIT)
    lifetime = draw(
        st.timedeltas(min_value=timedelta(microseconds=1), max_value=timedelta(days=400))
    )
    expires_at = (env["ts_event"] + lifetime).astimezone(draw(timezones))
    return Intent(
        **env,
        intent_id=draw(identifiers),
        symbol=draw(symbols),
        side=draw(st.sampled_from(Side)),
        effect=draw(st.sampled_from(PositionEffect)),
        quantity=draw(positive_floats),
        price_ref=draw(positive_floats),
        notional=draw(positive_floats),
        currency=draw(currencies),
        order_type=order_type,
        limit_price=draw(positive_floats if needs_limit else st.none() | positive_floats),
        stop_price=draw(st.none() | positive_floats),
        horizon=draw(st.sampled_from(Horizon)),
        risk_budget=draw(non_negative_floats),
        cvar_contribution=draw(non_negative_floats),
        expires_at=expires_at,
    )


intents = _intents()


@st.composite
def _orders(draw: st.DrawFn) -> Order:
    return Order(
        **draw(envelopes()),
        order_id=draw(identifiers),
        intent_id=draw(identifiers),
        symbol=draw(symbols),
        side=draw(st.sampled_from(Side)),
        quantity=draw(positive_floats),
        order_type=draw(st.sampled_from(OrderType)),
        limit_price=draw(st.none() | positive_floats),
        stop_price=draw(st.none() | positive_floats),
        time_in_force=draw(st.sampled_from(TimeInForce)),
        status=draw(st.sampled_from(OrderStatus)),
        expires_at=draw(st.none() | aware_datetimes),
        venue=draw(st.from_regex(r"[a-z][a-z0-9_]{0,31}", fullmatch=True)),
    )


orders = _orders()


@st.composite
def _fills(draw: st.DrawFn) -> Fill:
    return Fill(
        **draw(envelopes()),
        fill_id=draw(identifiers),
        order_id=draw(identifiers),
        symbol=draw(symbols),
        side=draw(st.sampled_from(Side)),
        quantity=draw(positive_floats),
        price=draw(positive_floats),
        currency=draw(currencies),
        fee=draw(non_negative_floats),
        fee_currency=draw(currencies),
        slippage_bps=draw(finite_floats),
        liquidity_side=draw(st.sampled_from(LiquiditySide)),
    )


fills = _fills()

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    finite_floats,
    texts,
)


@st.composite
def decision_logs(draw: st.DrawFn, kind: DecisionKind | None = None) -> DecisionLog:
    kind = draw(st.sampled_from(DecisionKind)) if kind is None else kind
    return DecisionLog(
        **draw(envelopes()),
        decision_id=draw(identifiers),
        kind=kind,
        symbol=draw(st.none() | symbols),
        reason=draw(st.sampled_from(DenialReason)) if kind is DecisionKind.DENIAL else None,
        detail=draw(texts),
        intent=draw(intents) if kind is DecisionKind.INTENT else None,
        inputs=draw(st.dictionaries(st.text(max_size=20), json_scalars, max_size=6)),
        model_version=draw(st.text(min_size=1, max_size=128)),
        config_hash=draw(sha256_hex),
    )


@st.composite
def _agent_statuses(draw: st.DrawFn) -> AgentStatus:
    return AgentStatus(
        **draw(envelopes()),
        agent=draw(names),
        state=draw(st.sampled_from(AgentState)),
        reason=draw(texts),
        failures=draw(st.integers(min_value=0, max_value=2**63)),
    )


agent_statuses = _agent_statuses()


@st.composite
def _run_controls(draw: st.DrawFn) -> RunControl:
    return RunControl(
        **draw(envelopes()),
        run_id=draw(st.from_regex(r"[A-Za-z0-9_.:-]{1,128}", fullmatch=True)),
        event=draw(st.sampled_from(["started", "ended"])),
        engine=draw(names),
        agents=tuple(draw(st.lists(names, max_size=4))),
    )


run_controls = _run_controls()

# --- fixed examples ---------------------------------------------------------------------------

T0 = datetime(2024, 1, 2, 21, 0, tzinfo=UTC)
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
ENVELOPE: dict[str, Any] = {"trace_id": TRACE, "ts_event": T0, "ts_init": T0}
HASH = "ab" * 32


def signal_example(**overrides: Any) -> dict[str, Any]:
    return {
        **ENVELOPE,
        "agent": "momentum",
        "symbol": "AAPL",
        "mu": 0.01,
        "sigma": 0.05,
        "horizon": "1m",
        "confidence": 0.7,
        **overrides,
    }


def intent_example(**overrides: Any) -> dict[str, Any]:
    return {
        **ENVELOPE,
        "intent_id": "1" * 32,
        "symbol": "AAPL",
        "side": "buy",
        "quantity": 10.0,
        "price_ref": 190.0,
        "notional": 1900.0,
        "horizon": "1m",
        "risk_budget": 50.0,
        "expires_at": T0 + timedelta(days=1),
        **overrides,
    }


def examples() -> dict[type[Contract], Contract]:
    """One valid, hand-written instance of every contract."""
    intent = Intent(**intent_example())
    return {
        Bar: Bar(**ENVELOPE, symbol="GOOG", open=10.0, high=12.0, low=9.5, close=11.0, volume=1e6),
        MacroObservation: MacroObservation(**ENVELOPE, series="10year", value=0.0783),
        SocialPost: SocialPost(**ENVELOPE, source="reddit", post_id="abc", symbols=("AAPL",)),
        Watermark: Watermark(**ENVELOPE, origin="replay"),
        Signal: Signal(**signal_example()),
        Opportunity: Opportunity(
            **ENVELOPE,
            symbol="AAPL",
            horizon="1m",
            mu=0.01,
            sigma=0.05,
            quantiles=(Quantile(level=0.05, value=-0.07), Quantile(level=0.95, value=0.09)),
            contributions=(
                Contribution(
                    agent="momentum",
                    weight=1.0,
                    mu=0.01,
                    sigma=0.05,
                    confidence=0.7,
                    signal_trace_id=TRACE,
                ),
            ),
            blender="precision",
            model_version="v1",
        ),
        Intent: intent,
        Order: Order(
            **ENVELOPE,
            order_id="2" * 32,
            intent_id="1" * 32,
            symbol="AAPL",
            side="buy",
            quantity=10.0,
            order_type="market",
        ),
        Fill: Fill(
            **ENVELOPE,
            fill_id="3" * 32,
            order_id="2" * 32,
            symbol="AAPL",
            side="buy",
            quantity=10.0,
            price=190.1,
            fee=1.0,
        ),
        DecisionLog: DecisionLog(
            **ENVELOPE,
            decision_id="4" * 32,
            kind="intent",
            intent=intent,
            inputs={"mu": 0.01, "n": 3, "ok": True, "why": "edge", "none": None},
            model_version="v1",
            config_hash=HASH,
        ),
        AgentStatus: AgentStatus(**ENVELOPE, agent="momentum", state="quarantined", failures=3),
        RunControl: RunControl(
            **ENVELOPE, run_id="seed0-1a2b3c4d-0001", event="started", engine="tradeengine"
        ),
    }
