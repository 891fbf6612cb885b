"""The run's SQLite journal: decisions, orders, fills and portfolio snapshots, written in batches.

Why this module exists: a run must leave an auditable, queryable record (and, later, the state a
restarted paper account resumes from) without slowing the trading path. The hot path only
appends to an in-memory batch; a single writer task hands full batches to a worker thread.

Design
- `record(item)` is synchronous and O(1): it appends to the current batch and, when the batch is
  full, seals it for the writer. It never blocks. If the writer is `max_pending_batches` sealed
  batches behind, `record` raises `JournalBackpressureError` rather than grow memory without
  bound: it is meant for callers that cannot await and record little.
- `await put(item)` is what the engine's pipeline uses: the same append, but when the writer is
  `max_pending_batches` behind it waits until a batch has been written (backpressure).
- One writer task, one write in flight: each sealed batch is written by `executemany` in a
  worker thread (`asyncio.to_thread`), in one transaction. A partial batch is sealed when the
  writer has been idle for `flush_interval_s`, so a quiet run still reaches disk promptly.
- `flush()` waits until everything recorded so far is committed; `stop()` flushes and closes.
  A write error is not swallowed: it is raised by the next `record`/`put`/`flush`/`stop`.
- SQLite in WAL mode with ``synchronous=NORMAL``: readers (the read helpers, a summary tool,
  `sqlite3` in a shell) never block the writer, and a commit costs no fsync of the main file.
  NORMAL can lose the last transactions on power loss, never corrupt the database.
- Tables are append-only logs: `orders` holds every state change of an order (the latest row of
  an `order_id` is its current state), which is what a later resume will replay. Each row keeps
  the key fields as columns for queries plus the full contract as JSON (`json`), which is
  deterministic for a seeded replay, so `table_digest` can compare two runs byte for byte.
- The read helpers (`decisions`, `orders`, `fills`, `snapshots`, `meta`) open their own
  short-lived query-only connection (WAL allows it next to the writer) and see committed rows
  only: call `await flush()` first for an up-to-date view. They are synchronous and meant for
  tests, summaries and tools, not the hot path.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import json
import sqlite3
import time
from collections import deque
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from contracts import DecisionLog, Fill, Order
from engine.execution.model import PortfolioSnapshot
from engine.lifecycle import AsyncService
from engine.telemetry.observe import LatencyObserver

JournalItem = DecisionLog | Order | Fill | PortfolioSnapshot

SCHEMA_VERSION: Final = 1

_DDL: Final = (
    """CREATE TABLE IF NOT EXISTS meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS decisions (
        ts_event TEXT NOT NULL,
        ts_init TEXT NOT NULL,
        decision_id TEXT NOT NULL,
        trace_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        symbol TEXT,
        reason TEXT,
        intent_id TEXT,
        side TEXT,
        quantity REAL,
        config_hash TEXT NOT NULL,
        json TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS orders (
        ts_event TEXT NOT NULL,
        ts_init TEXT NOT NULL,
        order_id TEXT NOT NULL,
        intent_id TEXT NOT NULL,
        trace_id TEXT NOT NULL,
        symbol TEXT NOT NULL,
        side TEXT NOT NULL,
        order_type TEXT NOT NULL,
        quantity REAL NOT NULL,
        stop_price REAL,
        status TEXT NOT NULL,
        json TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS fills (
        ts_event TEXT NOT NULL,
        ts_init TEXT NOT NULL,
        fill_id TEXT NOT NULL,
        order_id TEXT NOT NULL,
        trace_id TEXT NOT NULL,
        symbol TEXT NOT NULL,
        side TEXT NOT NULL,
        quantity REAL NOT NULL,
        price REAL NOT NULL,
        currency TEXT NOT NULL,
        fee REAL NOT NULL,
        fee_currency TEXT NOT NULL,
        slippage_bps REAL NOT NULL,
        json TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS snapshots (
        ts TEXT NOT NULL,
        cash REAL NOT NULL,
        positions_value REAL NOT NULL,
        equity REAL NOT NULL,
        gross_exposure REAL NOT NULL,
        realized_pnl REAL NOT NULL,
        unrealized_pnl REAL NOT NULL,
        fees_paid REAL NOT NULL,
        peak_equity REAL NOT NULL,
        drawdown REAL NOT NULL,
        n_positions INTEGER NOT NULL,
        json TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS orders_order_id ON orders (order_id)",
    "CREATE INDEX IF NOT EXISTS fills_order_id ON fills (order_id)",
)

_INSERT: Final = {
    "decisions": "INSERT INTO decisions VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
    "orders": "INSERT INTO orders VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
    "fills": "INSERT INTO fills VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
    "snapshots": "INSERT INTO snapshots VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
}
TABLES: Final = ("meta", *_INSERT)

Row = tuple[object, ...]


class JournalError(RuntimeError):
    """The journal cannot accept records (not started, stopped, or the writer failed)."""


class JournalBackpressureError(JournalError):
    """`record` was called while the writer is too far behind; use `await put(...)`."""


class Journal(AsyncService):
    """Batched, append-only SQLite journal of one run."""

    def __init__(
        self,
        path: Path,
        *,
        batch_size: int = 256,
        flush_interval_s: float = 1.0,
        max_pending_batches: int = 8,
        meta: Mapping[str, str | int | float] | None = None,
        write_latency: LatencyObserver | None = None,
    ) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be > 0 (got {batch_size})")
        if not flush_interval_s > 0:
            raise ValueError(f"flush_interval_s must be > 0 (got {flush_interval_s})")
        if max_pending_batches <= 0:
            raise ValueError(f"max_pending_batches must be > 0 (got {max_pending_batches})")
        self.path = Path(path)
        self._batch_size = batch_size
        self._flush_interval_s = flush_interval_s
        self._max_pending = max_pending_batches
        self._meta = {k: str(v) for k, v in (meta or {}).items()}
        self._write_latency = write_latency
        self._batch: list[JournalItem] = []
        self._sealed: deque[list[JournalItem]] = deque()
        self._conn: sqlite3.Connection | None = None
        self._writer: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._progress = asyncio.Condition()
        self._write_lock = asyncio.Lock()
        self._closing = False
        self._accepting = False
        self._error: BaseException | None = None
        self.rows_written = 0
        self.batches_written = 0
        self.put_waits = 0
        """How often `put` had to wait for the writer (backpressure events)."""

    # --------------------------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Create (or open) the database, its tables and the meta rows; start the writer."""
        if self._writer is not None:
            return
        self._conn = await asyncio.to_thread(self._open)
        self._closing = False
        self._accepting = True
        self._writer = asyncio.create_task(self._run(), name=f"journal-writer:{self.path.name}")

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise JournalError(f"{self.path}: SQLite refused WAL mode (got {mode!r})")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("BEGIN")
            for statement in _DDL:
                conn.execute(statement)
            conn.execute(
                "INSERT OR IGNORE INTO meta VALUES ('journal_schema_version', ?)",
                (str(SCHEMA_VERSION),),
            )
            conn.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", self._meta.items())
            conn.execute("COMMIT")
        except BaseException:
            conn.close()
            raise
        return conn

    async def stop(self) -> None:
        """Write everything recorded, then close. Raises the writer's error, if any."""
        self._accepting = False
        writer, self._writer = self._writer, None
        if writer is not None:
            self._seal()
            self._closing = True
            self._wake.set()
            await asyncio.gather(writer, return_exceptions=True)
        conn, self._conn = self._conn, None
        if conn is not None:
            await asyncio.to_thread(conn.close)
        self._raise_if_failed()

    # ----------------------------------------------------------------------------------- writing

    def record(self, item: JournalItem) -> None:
        """Append one item (O(1), never blocks). See the module docstring for `put` vs this."""
        self._check_accepting()
        _check_type(item)
        if self._would_overflow():
            raise JournalBackpressureError(
                f"journal writer is {len(self._sealed)} batches behind; use `await put(...)`"
            )
        self._append(item)

    async def put(self, item: JournalItem) -> None:
        """Append one item, waiting while the writer is `max_pending_batches` behind."""
        self._check_accepting()
        _check_type(item)
        if self._would_overflow():
            self.put_waits += 1
            async with self._progress:
                await self._progress.wait_for(
                    lambda: not self._would_overflow() or not self._accepting
                )
            self._check_accepting()
        self._append(item)

    def _would_overflow(self) -> bool:
        """True when one more item would seal a batch beyond `max_pending_batches`."""
        return len(self._sealed) >= self._max_pending and len(self._batch) + 1 >= self._batch_size

    @property
    def pending_batches(self) -> int:
        """Sealed batches waiting for the writer (bounded by `max_pending_batches`)."""
        return len(self._sealed)

    async def flush(self) -> None:
        """Wait until everything recorded so far is committed."""
        self._raise_if_failed()
        if self._writer is None:
            return
        self._seal()
        async with self._progress:
            await self._progress.wait_for(lambda: not self._sealed or self._error is not None)
        self._raise_if_failed()

    async def set_meta(self, values: Mapping[str, str | int | float]) -> None:
        """Insert or replace meta rows (e.g. config hash, seed, created_at) now."""
        self._check_accepting()
        rows = [(k, str(v)) for k, v in values.items()]
        self._meta.update(rows)
        conn = self._conn
        assert conn is not None
        async with self._write_lock:
            await asyncio.to_thread(_write_meta, conn, rows)

    def _append(self, item: JournalItem) -> None:
        self._batch.append(item)
        if len(self._batch) >= self._batch_size:
            self._seal()

    def _seal(self) -> None:
        if self._batch:
            self._sealed.append(self._batch)
            self._batch = []
            self._wake.set()

    def _check_accepting(self) -> None:
        self._raise_if_failed()
        if not self._accepting:
            raise JournalError(f"journal {self.path} is not started (or already stopped)")

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise JournalError(f"journal {self.path} writer failed: {self._error!r}") from (
                self._error
            )

    async def _run(self) -> None:
        conn = self._conn
        assert conn is not None
        try:
            while True:
                if not self._sealed:
                    if self._closing:
                        return
                    self._wake.clear()
                    try:
                        async with asyncio.timeout(self._flush_interval_s):
                            await self._wake.wait()
                    except TimeoutError:
                        self._seal()
                    continue
                batch = self._sealed[0]
                async with self._write_lock:
                    started = time.perf_counter()
                    await asyncio.to_thread(_write_batch, conn, batch)
                    if self._write_latency is not None:
                        self._write_latency.observe(time.perf_counter() - started)
                self._sealed.popleft()
                self.rows_written += len(batch)
                self.batches_written += 1
                async with self._progress:
                    self._progress.notify_all()
        except BaseException as exc:
            self._error = exc
            self._accepting = False
            async with self._progress:
                self._progress.notify_all()
            if not isinstance(exc, Exception):
                raise

    # ----------------------------------------------------------------------------------- reading

    def _read(self, sql: str, params: Sequence[object] = ()) -> list[sqlite3.Row]:
        if not self.path.exists():
            raise JournalError(f"journal {self.path} does not exist (not started?)")
        # Not `mode=ro`: a read-only connection cannot remove the -wal/-shm files it creates
        # after the writer closed. `query_only` gives the same protection.
        conn = sqlite3.connect(self.path)
        try:
            conn.execute("PRAGMA query_only=ON")
            conn.row_factory = sqlite3.Row
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    def _rows(self, table: str) -> list[dict[str, Any]]:
        if table not in _INSERT:
            raise ValueError(f"unknown journal table {table!r} (one of {sorted(_INSERT)})")
        return [dict(row) for row in self._read(f"SELECT * FROM {table} ORDER BY rowid")]

    def decisions(self) -> list[dict[str, Any]]:
        return self._rows("decisions")

    def orders(self) -> list[dict[str, Any]]:
        return self._rows("orders")

    def fills(self) -> list[dict[str, Any]]:
        return self._rows("fills")

    def snapshots(self) -> list[dict[str, Any]]:
        return self._rows("snapshots")

    def meta(self) -> dict[str, str]:
        return {str(r["key"]): str(r["value"]) for r in self._read("SELECT key, value FROM meta")}

    def journal_mode(self) -> str:
        return str(self._read("PRAGMA journal_mode")[0][0])

    def table_digest(self, table: str) -> str:
        """SHA-256 (hex) over a table's rows in insertion (rowid) order.

        Every column is included: nothing written is wall-clock or random (times come from the
        engine clock, ids from the seeded generator), so two identical replays give equal digests.
        """
        if table not in _INSERT:
            raise ValueError(f"unknown journal table {table!r} (one of {sorted(_INSERT)})")
        digest = hashlib.sha256()
        for row in self._read(f"SELECT * FROM {table} ORDER BY rowid"):
            digest.update(json.dumps(list(row), separators=(",", ":")).encode())
            digest.update(b"\n")
        return digest.hexdigest()


# ---------------------------------------------------------------------------- worker-thread side


def _write_meta(conn: sqlite3.Connection, rows: list[tuple[str, str]]) -> None:
    conn.execute("BEGIN")
    try:
        conn.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", rows)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _write_batch(conn: sqlite3.Connection, batch: list[JournalItem]) -> None:
    """Serialise and insert one batch in one transaction (runs in a worker thread)."""
    rows: dict[str, list[Row]] = {table: [] for table in _INSERT}
    for item in batch:
        table, row = _to_row(item)
        rows[table].append(row)
    conn.execute("BEGIN")
    try:
        for table, table_rows in rows.items():
            if table_rows:
                conn.executemany(_INSERT[table], table_rows)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


_SNAPSHOT_FIELDS: Final = tuple(f.name for f in dataclasses.fields(PortfolioSnapshot))


@functools.lru_cache(maxsize=4_096)
def _iso(ts: datetime) -> str:
    """ISO 8601 of a UTC timestamp; cached because a step's rows share their timestamps."""
    return ts.isoformat()


def _check_type(item: object) -> None:
    if not isinstance(item, DecisionLog | Order | Fill | PortfolioSnapshot):
        raise TypeError(f"cannot journal a {type(item).__name__}")


def _to_row(item: JournalItem) -> tuple[str, Row]:
    # Enum members are StrEnums: sqlite3 binds them as their text value.
    if isinstance(item, Fill):
        return "fills", (
            _iso(item.ts_event),
            _iso(item.ts_init),
            item.fill_id,
            item.order_id,
            item.trace_id,
            item.symbol,
            item.side,
            item.quantity,
            item.price,
            item.currency,
            item.fee,
            item.fee_currency,
            item.slippage_bps,
            item.model_dump_json(),
        )
    if isinstance(item, Order):
        return "orders", (
            _iso(item.ts_event),
            _iso(item.ts_init),
            item.order_id,
            item.intent_id,
            item.trace_id,
            item.symbol,
            item.side,
            item.order_type,
            item.quantity,
            item.stop_price,
            item.status,
            item.model_dump_json(),
        )
    if isinstance(item, DecisionLog):
        intent = item.intent
        return "decisions", (
            _iso(item.ts_event),
            _iso(item.ts_init),
            item.decision_id,
            item.trace_id,
            item.kind,
            item.symbol,
            item.reason,
            intent.intent_id if intent is not None else None,
            intent.side if intent is not None else None,
            intent.quantity if intent is not None else None,
            item.config_hash,
            item.model_dump_json(),
        )
    if isinstance(item, PortfolioSnapshot):
        fields: dict[str, object] = {name: getattr(item, name) for name in _SNAPSHOT_FIELDS}
        fields["ts"] = ts = _iso(item.ts)
        return "snapshots", (
            ts,
            item.cash,
            item.positions_value,
            item.equity,
            item.gross_exposure,
            item.realized_pnl,
            item.unrealized_pnl,
            item.fees_paid,
            item.peak_equity,
            item.drawdown,
            item.n_positions,
            json.dumps(fields, sort_keys=True, separators=(",", ":")),
        )
    raise TypeError(f"cannot journal a {type(item).__name__}")


__all__ = [
    "SCHEMA_VERSION",
    "TABLES",
    "Journal",
    "JournalBackpressureError",
    "JournalError",
    "JournalItem",
    "Row",
]
