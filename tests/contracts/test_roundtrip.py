"""Every contract survives a JSON round trip unchanged, byte for byte on the second trip."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts import (
    ALL_CONTRACTS,
    AgentStatus,
    Bar,
    Contract,
    DecisionKind,
    DecisionLog,
    Fill,
    Intent,
    MacroObservation,
    Opportunity,
    Order,
    RunControl,
    Signal,
    SocialPost,
    Watermark,
)

from . import (
    agent_statuses,
    bars,
    decision_logs,
    examples,
    fills,
    intents,
    macro_observations,
    opportunities,
    orders,
    run_controls,
    signals,
    social_posts,
    watermarks,
)


def _assert_roundtrip(message: Contract) -> None:
    # Arrange
    model = type(message)
    first = message.model_dump_json()

    # Act
    again = model.model_validate_json(first)
    second = again.model_dump_json()
    third = model.model_validate_json(second).model_dump_json()

    # Assert
    assert again == message
    assert second == first
    assert third == second
    assert model.from_json(message.to_json()) == message


STRATEGIES: dict[str, tuple[type[Contract], st.SearchStrategy[Contract]]] = {
    "bar_close_only": (Bar, bars(close_only=True)),
    "bar_ohlcv": (Bar, bars(close_only=False)),
    "macro_observation": (MacroObservation, macro_observations),
    "social_post": (SocialPost, social_posts),
    "watermark": (Watermark, watermarks),
    "signal": (Signal, signals),
    "opportunity": (Opportunity, opportunities),
    "intent": (Intent, intents),
    "order": (Order, orders),
    "fill": (Fill, fills),
    "decision_log_intent": (DecisionLog, decision_logs(kind=DecisionKind.INTENT)),
    "decision_log_denial": (DecisionLog, decision_logs(kind=DecisionKind.DENIAL)),
    "decision_log_no_trade": (DecisionLog, decision_logs(kind=DecisionKind.NO_TRADE)),
    "agent_status": (AgentStatus, agent_statuses),
    "run_control": (RunControl, run_controls),
}


@pytest.mark.parametrize("name", sorted(STRATEGIES))
@given(data=st.data())
def test_roundtrip_when_contract_is_valid_then_json_is_lossless_and_stable(
    name: str, data: st.DataObject
) -> None:
    # Arrange
    model, strategy = STRATEGIES[name]
    message = data.draw(strategy)
    assert type(message) is model

    # Act / Assert
    _assert_roundtrip(message)


def test_roundtrip_when_strategies_listed_then_every_contract_is_covered() -> None:
    # Arrange
    expected = set(ALL_CONTRACTS)

    # Act
    covered = {model for model, _ in STRATEGIES.values()}

    # Assert
    assert covered == expected


@pytest.mark.parametrize("model", ALL_CONTRACTS, ids=lambda m: m.__name__)
def test_roundtrip_when_hand_written_example_then_json_is_lossless(model: type[Contract]) -> None:
    # Arrange
    message = examples()[model]

    # Act / Assert
    _assert_roundtrip(message)
