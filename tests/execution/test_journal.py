from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from pathlib import Path

import pytest

from contracts import DecisionKind, DecisionLog, DenialReason, Fill, Order, PositionEffect, Side
from engine.execution import journal as journal_module
from engine.execution.journal import (
    Journal,
    JournalBackpressureError,
    JournalError,
    JournalItem,
)
from engine.execution.model import PortfolioSnapshot
from tests.execution import Venue, bar, day, venue

CONFIG_HASH = "c" * 64


def trading_items(seed: int = 3) -> list[JournalItem]:
    """A deterministic little run: decisions, orders, fills and snapshots in pipeline order."""
    v: Venue = venue(seed=seed, slippage_bps=5.0)
    items: list[JournalItem] = []
    closes = [100.0, 101.0, 99.0, 104.0, 80.0, 82.0]
    for n, close in enumerate(closes):
        bars = [bar("AAPL", day(n), close, open=close - 0.5, high=close + 1, low=close - 1)]
        v.clock.advance_to(day(n))
        items.extend(v.broker.on_bars(bars))
        v.portfolio.mark(bars)
        if n in (0, 3):
            intent = v.intent("AAPL", Side.BUY, 2.0, ts=day(n), stop=close * 0.9)
        elif n == 2:
            intent = v.intent("AAPL", Side.SELL, 2.0, ts=day(n), effect=PositionEffect.CLOSE)
        else:
            items.append(
                DecisionLog(
                    trace_id=v.ids.trace_id(),
                    ts_event=day(n),
                    ts_init=day(n),
                    decision_id=v.ids.trace_id(),
                    kind=DecisionKind.DENIAL,
                    symbol="AAPL",
                    reason=DenialReason.NON_POSITIVE_EDGE,
                    inputs={"mu": -0.01, "n": n},
                    model_version="test/1",
                    config_hash=CONFIG_HASH,
                )
            )
            items.append(v.portfolio.snapshot(day(n)))
            continue
        items.append(
            DecisionLog(
                trace_id=intent.trace_id,
                ts_event=day(n),
                ts_init=day(n),
                decision_id=v.ids.trace_id(),
                kind=DecisionKind.INTENT,
                symbol="AAPL",
                intent=intent,
                model_version="test/1",
                config_hash=CONFIG_HASH,
            )
        )
        items.append(v.broker.submit(intent))
        items.append(v.portfolio.snapshot(day(n)))
    return items


def snapshot(n: int) -> PortfolioSnapshot:
    return PortfolioSnapshot(
        ts=day(n),
        cash=500.0 - n,
        positions_value=float(n),
        equity=500.0,
        gross_exposure=float(n),
        realized_pnl=0.0,
        unrealized_pnl=0.0,
        fees_paid=0.0,
        peak_equity=500.0,
        drawdown=0.0,
        n_positions=1,
    )


async def write(
    path: Path,
    items: list[JournalItem],
    *,
    batch_size: int = 256,
    meta: dict[str, str | int | float] | None = None,
) -> Journal:
    journal = Journal(path, batch_size=batch_size, meta=meta)
    async with journal:
        for item in items:
            await journal.put(item)
    return journal


# ---------------------------------------------------------------------------------- round trip


async def test_start_when_new_path_then_creates_wal_database_with_tables_and_meta(
    tmp_path: Path,
) -> None:
    # Arrange
    journal = Journal(
        tmp_path / "run" / "journal.sqlite",
        meta={"config_hash": CONFIG_HASH, "seed": 42, "created_at": "2024-01-02T21:00:00+00:00"},
    )
    # Act
    async with journal:
        mode = journal.journal_mode()
        assert journal._conn is not None
        synchronous = journal._conn.execute("PRAGMA synchronous").fetchone()[0]
        meta = journal.meta()
    # Assert
    assert mode == "wal"
    assert synchronous == 1  # NORMAL
    assert meta["config_hash"] == CONFIG_HASH
    assert meta["seed"] == "42"
    assert meta["created_at"] == "2024-01-02T21:00:00+00:00"
    with sqlite3.connect(journal.path) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"decisions", "orders", "fills", "snapshots", "meta"} <= tables


async def test_put_when_run_recorded_then_rows_round_trip_to_equal_contracts(
    tmp_path: Path,
) -> None:
    # Arrange
    items = trading_items()
    # Act
    journal = await write(tmp_path / "j.sqlite", items, batch_size=4)
    # Assert
    orders = [i for i in items if isinstance(i, Order)]
    fills = [i for i in items if isinstance(i, Fill)]
    decisions = [i for i in items if isinstance(i, DecisionLog)]
    snapshots = [i for i in items if isinstance(i, PortfolioSnapshot)]
    assert len(fills) >= 2
    assert len(orders) >= 4
    assert decisions
    assert snapshots
    assert [Order.model_validate_json(r["json"]) for r in journal.orders()] == orders
    assert [Fill.model_validate_json(r["json"]) for r in journal.fills()] == fills
    assert [DecisionLog.model_validate_json(r["json"]) for r in journal.decisions()] == decisions
    fill_rows = journal.fills()
    assert [(r["symbol"], r["side"], r["quantity"], r["price"], r["fee"]) for r in fill_rows] == [
        (f.symbol, f.side.value, f.quantity, f.price, f.fee) for f in fills
    ]
    assert [r["status"] for r in journal.orders()] == [o.status.value for o in orders]
    snap_rows = journal.snapshots()
    assert [(r["ts"], r["equity"], r["cash"]) for r in snap_rows] == [
        (s.ts.isoformat(), s.equity, s.cash) for s in snapshots
    ]
    assert json.loads(snap_rows[0]["json"])["n_positions"] == snapshots[0].n_positions
    assert journal.rows_written == len(items)


async def test_table_digest_when_two_identical_runs_then_equal_and_differs_on_change(
    tmp_path: Path,
) -> None:
    # Arrange / Act: different batching must not matter
    a = await write(tmp_path / "a.sqlite", trading_items(seed=3), batch_size=3)
    b = await write(tmp_path / "b.sqlite", trading_items(seed=3), batch_size=256)
    c = await write(tmp_path / "c.sqlite", trading_items(seed=4), batch_size=3)
    # Assert
    for table in ("decisions", "orders", "fills", "snapshots"):
        assert a.table_digest(table) == b.table_digest(table)
    assert a.table_digest("orders") != c.table_digest("orders")
    with pytest.raises(ValueError, match="unknown journal table"):
        a.table_digest("sqlite_master; DROP TABLE fills")


async def test_stop_when_batch_not_full_then_flushed_before_close(tmp_path: Path) -> None:
    # Arrange
    journal = Journal(tmp_path / "j.sqlite", batch_size=1_000, flush_interval_s=3_600.0)
    await journal.start()
    for n in range(10):
        journal.record(snapshot(n))
    await asyncio.sleep(0)
    assert journal.snapshots() == []
    # Act
    await journal.stop()
    # Assert
    assert len(journal.snapshots()) == 10
    assert journal.batches_written == 1


async def test_record_when_flush_interval_elapses_then_partial_batch_written(
    tmp_path: Path,
) -> None:
    # Arrange
    async with Journal(tmp_path / "j.sqlite", batch_size=1_000, flush_interval_s=0.02) as journal:
        # Act
        journal.record(snapshot(1))
        for _ in range(200):
            if journal.rows_written:
                break
            await asyncio.sleep(0.01)
        # Assert
        assert len(journal.snapshots()) == 1


async def test_flush_when_called_then_everything_recorded_is_readable(tmp_path: Path) -> None:
    # Arrange
    async with Journal(tmp_path / "j.sqlite", batch_size=7, flush_interval_s=3_600.0) as journal:
        for n in range(20):
            journal.record(snapshot(n))
        # Act
        await journal.flush()
        # Assert
        assert [r["cash"] for r in journal.snapshots()] == [500.0 - n for n in range(20)]


async def test_start_when_existing_journal_then_appends_and_keeps_rows(tmp_path: Path) -> None:
    # Arrange
    path = tmp_path / "j.sqlite"
    await write(path, [snapshot(1)])
    # Act
    journal = await write(path, [snapshot(2)], meta={"seed": 1})
    # Assert
    assert [r["ts"] for r in journal.snapshots()] == [day(1).isoformat(), day(2).isoformat()]
    assert journal.meta()["journal_schema_version"] == "1"


async def test_set_meta_when_called_then_rows_replaced(tmp_path: Path) -> None:
    # Arrange
    async with Journal(tmp_path / "j.sqlite", meta={"seed": 1}) as journal:
        # Act
        await journal.set_meta({"seed": 2, "config_hash": CONFIG_HASH})
        # Assert
        assert journal.meta()["seed"] == "2"
        assert journal.meta()["config_hash"] == CONFIG_HASH


# ------------------------------------------------------------------------------- backpressure


class SlowWriter:
    """Replaces the worker-thread write: blocks until released; tracks writes in flight."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        self.real = journal_module._write_batch

    def __call__(self, conn: sqlite3.Connection, batch: list[JournalItem]) -> None:
        with self.lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            self.release.wait(timeout=10)
            self.real(conn, batch)
        finally:
            with self.lock:
                self.in_flight -= 1


async def test_put_when_writer_behind_then_waits_with_bounded_backlog(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Arrange
    slow = SlowWriter()
    monkeypatch.setattr(journal_module, "_write_batch", slow)
    journal = Journal(
        tmp_path / "j.sqlite", batch_size=2, flush_interval_s=3_600.0, max_pending_batches=2
    )
    await journal.start()
    total = 40

    async def producer() -> None:
        for n in range(total):
            await journal.put(snapshot(n))

    # Act
    task = asyncio.create_task(producer())
    for _ in range(50):
        await asyncio.sleep(0.005)
    blocked = not task.done()
    backlog = journal.pending_batches
    slow.release.set()
    await asyncio.wait_for(task, timeout=10)
    await journal.stop()
    # Assert
    assert blocked
    assert backlog <= 2
    assert journal.put_waits >= 1
    assert slow.max_in_flight == 1  # never more than one write in flight
    assert len(journal.snapshots()) == total


async def test_record_when_writer_behind_then_raises_instead_of_growing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Arrange
    slow = SlowWriter()
    monkeypatch.setattr(journal_module, "_write_batch", slow)
    journal = Journal(
        tmp_path / "j.sqlite", batch_size=2, flush_interval_s=3_600.0, max_pending_batches=2
    )
    await journal.start()
    # Act
    recorded = 0
    error: JournalBackpressureError | None = None
    for n in range(100):
        try:
            journal.record(snapshot(n))
        except JournalBackpressureError as exc:
            error = exc
            break
        recorded += 1
    assert error is not None
    assert "await put" in str(error)
    # Assert
    assert journal.pending_batches <= 2
    slow.release.set()
    await journal.stop()
    assert len(journal.snapshots()) == recorded


async def test_flush_when_write_fails_then_error_raised_not_swallowed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Arrange
    def broken(conn: sqlite3.Connection, batch: list[JournalItem]) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(journal_module, "_write_batch", broken)
    journal = Journal(tmp_path / "j.sqlite", batch_size=1)
    await journal.start()
    journal.record(snapshot(1))
    # Act / Assert
    with pytest.raises(JournalError, match="disk I/O error"):
        await journal.flush()
    with pytest.raises(JournalError):
        journal.record(snapshot(2))
    with pytest.raises(JournalError):
        await journal.stop()


async def test_record_when_not_started_or_stopped_then_journal_error(tmp_path: Path) -> None:
    # Arrange
    journal = Journal(tmp_path / "j.sqlite")
    # Act / Assert
    with pytest.raises(JournalError, match="not started"):
        journal.record(snapshot(1))
    await journal.start()
    await journal.stop()
    with pytest.raises(JournalError, match="not started"):
        await journal.put(snapshot(1))


async def test_record_when_unsupported_item_then_type_error(tmp_path: Path) -> None:
    # Arrange
    async with Journal(tmp_path / "j.sqlite") as journal:
        # Act / Assert
        with pytest.raises(TypeError, match="cannot journal"):
            journal.record("hello")  # type: ignore[arg-type]
