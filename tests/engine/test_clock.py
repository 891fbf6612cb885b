"""Clocks: replay time moves only forward and only when the data moves it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from engine.clock import Clock, ClockError, LiveClock, ReplayClock

T0 = datetime(2020, 1, 2, 21, tzinfo=UTC)


def test_now_when_replay_clock_not_advanced_then_start_time() -> None:
    # Arrange
    clock = ReplayClock(T0)
    # Act / Assert
    assert clock.now() == T0
    assert clock.now() == T0  # reading time does not move it


def test_advance_when_forward_then_now_follows_in_utc() -> None:
    # Arrange
    clock = ReplayClock(T0)
    later_in_cet = (T0 + timedelta(days=1)).astimezone(timezone(timedelta(hours=1)))
    # Act
    clock.advance_to(later_in_cet)
    # Assert
    assert clock.now() == T0 + timedelta(days=1)
    assert clock.now().tzinfo == UTC


def test_advance_when_backwards_then_error_and_time_unchanged() -> None:
    # Arrange
    clock = ReplayClock(T0)
    # Act
    with pytest.raises(ClockError, match="cannot move backwards"):
        clock.advance_to(T0 - timedelta(seconds=1))
    # Assert
    assert clock.now() == T0


def test_advance_when_naive_datetime_then_error() -> None:
    # Arrange
    clock = ReplayClock(T0)
    # Act / Assert
    with pytest.raises(ClockError, match="naive"):
        clock.advance_to(datetime(2021, 1, 1))


def test_now_when_live_clock_then_aware_utc_and_both_satisfy_protocol() -> None:
    # Arrange
    live = LiveClock()
    # Act
    now = live.now()
    # Assert
    assert now.tzinfo == UTC
    assert isinstance(live, Clock)
    assert isinstance(ReplayClock(T0), Clock)
