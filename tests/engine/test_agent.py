"""The plugin API surface: typed params, default subscriptions, signal construction."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import BaseModel

from contracts import Bar, Horizon, IdGenerator, MacroObservation, topics
from engine.agent import Agent, AgentContext, InvalidSignalError, NoParams
from engine.clock import ReplayClock
from engine.telemetry.logging import get_logger
from tests.kit.agents import EchoAgent, EchoParams

T0 = datetime(2021, 3, 1, 21, tzinfo=UTC)


def _context() -> AgentContext:
    return AgentContext(clock=ReplayClock(T0), log=get_logger("agent"), ids=IdGenerator(7))


def test_params_model_when_generic_argument_given_then_resolved_from_it() -> None:
    # Arrange / Act / Assert
    assert EchoAgent.params_model is EchoParams


def test_params_model_when_agent_takes_none_then_noparams() -> None:
    # Arrange
    class Bare(Agent[NoParams]):
        pass

    # Act / Assert
    assert Bare.params_model is NoParams


def test_subclass_when_generic_argument_not_a_model_then_type_error() -> None:
    # Arrange / Act / Assert
    with pytest.raises(TypeError, match="takes a pydantic model"):

        class Wrong(Agent[int]):  # type: ignore[type-var]
            pass


def test_subscriptions_when_only_on_bar_overridden_then_bars_only() -> None:
    # Arrange
    agent = EchoAgent("echo", EchoParams(), _context())
    # Act
    subs = agent.subscriptions()
    # Assert
    assert list(subs) == [topics.ALL_BARS]


def test_subscriptions_when_macro_and_bar_overridden_then_both() -> None:
    # Arrange
    class Both(Agent[NoParams]):
        async def on_bar(self, bar: Bar) -> None: ...
        async def on_macro(self, observation: MacroObservation) -> None: ...

    # Act
    subs = Both("both", NoParams(), _context()).subscriptions()
    # Assert
    assert list(subs) == [topics.ALL_BARS, topics.ALL_MACRO]


def test_signal_when_no_current_event_then_new_trace_and_clock_times() -> None:
    # Arrange
    agent = EchoAgent("echo", EchoParams(), _context())
    # Act
    sig = agent.signal(
        "AAPL",
        mu=0.01,
        sigma=0.02,
        horizon="1w",
        confidence=0.7,
        regime="calm_uptrend",
        features={"z": 1.5},
    )
    # Assert
    assert sig.ts_event == T0
    assert sig.ts_init == T0
    assert sig.trace_id == IdGenerator(7).trace_id()
    assert sig.horizon.value == "1w"
    assert agent._take_outbox() == [sig]


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [
        ("sigma", {"sigma": 0.0}),
        ("mu", {"mu": float("nan")}),
        ("confidence", {"confidence": 1.2}),
        ("horizon", {"horizon": "2d"}),
        ("features", {"features": {"x": float("inf")}}),
    ],
)
def test_signal_when_value_breaks_contract_then_error_names_field_and_nothing_queued(
    field: str, kwargs: dict[str, object]
) -> None:
    # Arrange
    agent = EchoAgent("echo", EchoParams(), _context())
    args: dict[str, object] = {"mu": 0.0, "sigma": 0.01, "horizon": "1d", "confidence": 0.5}
    args.update(kwargs)
    # Act
    with pytest.raises((InvalidSignalError, ValueError)) as info:
        agent.signal("AAPL", **args)  # type: ignore[arg-type]
    # Assert
    assert field in str(info.value)
    assert agent._take_outbox() == []


def test_params_when_validated_then_frozen_model_instance() -> None:
    # Arrange
    agent = EchoAgent("echo", EchoParams(sigma=0.5), _context())
    # Act / Assert
    assert isinstance(agent.params, BaseModel)
    assert agent.params.sigma == 0.5


def test_signal_when_features_malformed_for_a_known_symbol_then_invalid_signal_error() -> None:
    # Arrange: a first, valid signal teaches the fast path the symbol
    agent = EchoAgent("echo", EchoParams(), _context())
    agent.signal("AAPL", mu=0.01, sigma=0.05, horizon="1m", confidence=0.5)
    # Act / Assert
    with pytest.raises(InvalidSignalError, match=r"'echo'.*'AAPL'"):
        agent.signal(
            "AAPL",
            mu=0.01,
            sigma=0.05,
            horizon=Horizon("1m"),
            confidence=0.5,
            features=[("x", 1.0, 2.0)],  # type: ignore[arg-type]
        )


def test_signal_when_features_is_a_one_shot_iterable_then_every_feature_kept() -> None:
    # Arrange
    agent = EchoAgent("echo", EchoParams(), _context())
    agent.signal("AAPL", mu=0.01, sigma=0.05, horizon="1m", confidence=0.5, features={"x": 1.0})
    pairs = iter([("x", 1.0), ("new_name", 2.0)])
    # Act
    sig = agent.signal(
        "AAPL",
        mu=0.01,
        sigma=0.05,
        horizon=Horizon("1m"),
        confidence=0.5,
        features=pairs,  # type: ignore[arg-type]
    )
    # Assert
    assert sig.features == {"x": 1.0, "new_name": 2.0}
