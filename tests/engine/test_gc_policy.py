"""`run_gc_policy`: process GC settings for one run, restored afterwards."""

from __future__ import annotations

import gc

import pytest

from engine.gc_policy import run_gc_policy


def test_run_gc_policy_when_inside_then_heap_frozen_and_young_threshold_raised() -> None:
    # Arrange
    before = gc.get_threshold()
    # Act
    with run_gc_policy(young_threshold=12_345):
        inside = gc.get_threshold()
        frozen = gc.get_freeze_count()
    # Assert
    assert inside == (12_345, before[1], before[2])
    assert frozen > 0


def test_run_gc_policy_when_block_exits_then_settings_restored_and_heap_unfrozen() -> None:
    # Arrange
    before = gc.get_threshold()
    # Act
    with run_gc_policy():
        pass
    # Assert
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_run_gc_policy_when_block_raises_then_settings_restored() -> None:
    # Arrange
    before = gc.get_threshold()
    # Act
    with pytest.raises(RuntimeError), run_gc_policy():
        raise RuntimeError("run failed")
    # Assert
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_run_gc_policy_when_threshold_not_positive_then_value_error() -> None:
    # Arrange / Act / Assert
    with pytest.raises(ValueError, match="young_threshold"), run_gc_policy(young_threshold=0):
        pass


def test_run_gc_policy_when_nested_then_inner_exit_keeps_outer_freeze() -> None:
    # Arrange / Act
    with run_gc_policy():
        outer = gc.get_freeze_count()
        with run_gc_policy():
            pass
        after_inner = gc.get_freeze_count()
    # Assert
    assert after_inner == outer > 0
    assert gc.get_freeze_count() == 0


def test_run_gc_policy_when_threshold_rejected_then_nothing_left_frozen() -> None:
    # Arrange
    before = gc.get_threshold()
    # Act
    with pytest.raises(OverflowError), run_gc_policy(young_threshold=2**63):
        pass
    # Assert
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
