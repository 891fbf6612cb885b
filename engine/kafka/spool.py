"""The outage spool: egress records that could not be delivered yet, in order and bounded, and
optionally in an append-only file so that a killed process loses nothing.

Why it exists: while the broker is unreachable the egress keeps accepting bus messages for a
while instead of blocking the engine at once; when the broker is back (or the engine restarts)
the spool is drained first, in the original order.

File format: one JSON object per line (``message_id``, ``topic``, ``key``, ``value``,
``headers``). Byte strings are stored as a JSON string when they are UTF-8 (the common case:
the values are contract JSON, so the file stays readable with ``less``) and as
``{"b64": "..."}`` otherwise, so any bytes round-trip.

Delivered records are not removed from the file one by one: a sidecar ``<path>.acked`` holds
how many leading records were delivered, replaced atomically (temp file + ``os.replace``) on
every `ack`. It also names the message id of the file's first record, so a sidecar that
outlived its file (its removal lost in an OS crash) is ignored: duplicates, never skipped
records. When nothing is pending the spool file is truncated to zero and the sidecar removed,
so the file does not grow across outages; `open` rewrites the file to hold exactly the pending
records when it found delivered, torn or unreadable ones (once, with an fsync).

Crash-safety model, and the trade-offs behind it:

- `append` returns after the records are written to the file with one ``os.write`` (no fsync).
  A process kill (SIGKILL, OOM) after that loses nothing: the data is in the OS page cache and
  the next `open` finds it. An OS crash or power loss may lose the tail written since the last
  `fsync`: an fsync per append would cost milliseconds per message exactly while the engine is
  already degraded. Callers that want a durability point call `fsync()` (e.g. before `close`).
- A crash in the middle of a write leaves a torn last line; `open` drops it (counted in
  `torn`), so later appends start on a clean line. A complete line that does not parse (e.g.
  zeros left by an OS crash) is dropped and counted in `corrupt`; it still counts as a record
  position when the acknowledged count is applied, so that count points at the right record.
- Delivery is at-least-once by design: a record delivered just before a crash, whose ack had not
  reached the sidecar yet, is pending again after restart and is delivered twice. Consumers drop
  the duplicate by its ``message-id`` (the ingress de-duplication window).
- The file I/O is synchronous, on the event loop: an append is one small page-cache write
  (microseconds), and doing it in a thread would let memory and file order diverge.
- Records recovered beyond `max_messages` (the limit was lowered between runs) are all kept:
  nothing already accepted is dropped; `room` is then zero until the spool drains.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
from collections import deque
from collections.abc import Sequence
from itertools import islice
from pathlib import Path

from engine.kafka.envelope import Envelope

__all__ = ["Spool", "SpoolFull", "SpoolLockedError"]

_B64 = "b64"


class SpoolLockedError(RuntimeError):
    """Another process holds this spool file."""


class SpoolFull(Exception):
    """The records do not fit into the spool's remaining room; nothing was appended."""

    def __init__(self, wanted: int, room: int) -> None:
        super().__init__(f"spool full: {wanted} record(s) do not fit into the {room} left")
        self.wanted = wanted
        self.room = room


# ------------------------------------------------------------------------------ record encoding


def _dump_bytes(data: bytes) -> str | dict[str, str]:
    try:
        return data.decode()
    except UnicodeDecodeError:
        return {_B64: base64.b64encode(data).decode("ascii")}


def _load_bytes(obj: object) -> bytes:
    if isinstance(obj, str):
        return obj.encode()
    if isinstance(obj, dict) and isinstance(obj.get(_B64), str):
        return base64.b64decode(obj[_B64], validate=True)
    raise ValueError(f"not a byte string: {obj!r:.60}")


def _message_id_of(line: bytes) -> str | None:
    try:
        obj = json.loads(line)
    except ValueError:
        return None
    message_id = obj.get("message_id") if isinstance(obj, dict) else None
    return message_id if isinstance(message_id, str) else None


def _dump_record(record: Envelope) -> bytes:
    obj = {
        "message_id": record.message_id,
        "topic": record.topic,
        "key": None if record.key is None else _dump_bytes(record.key),
        "value": _dump_bytes(record.value),
        "headers": [[name, _dump_bytes(value)] for name, value in record.headers],
    }
    # ensure_ascii (default) keeps every line pure ASCII: no newline or odd code point inside.
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


def _load_record(line: bytes) -> Envelope:
    obj = json.loads(line)
    if not isinstance(obj, dict):
        raise ValueError("record is not an object")
    message_id, topic, headers = obj["message_id"], obj["topic"], obj["headers"]
    if not isinstance(message_id, str) or not isinstance(topic, str):
        raise ValueError("message_id and topic must be strings")
    if not isinstance(headers, list):
        raise ValueError("headers must be a list")
    parsed: list[tuple[str, bytes]] = []
    for pair in headers:
        if not isinstance(pair, list) or len(pair) != 2 or not isinstance(pair[0], str):
            raise ValueError("a header must be [name, value]")
        parsed.append((pair[0], _load_bytes(pair[1])))
    key = obj["key"]
    return Envelope(
        topic=topic,
        key=None if key is None else _load_bytes(key),
        value=_load_bytes(obj["value"]),
        headers=tuple(parsed),
        message_id=message_id,
    )


# ----------------------------------------------------------------------------------- the spool


class Spool:
    """Pending egress records, oldest first; memory only when `path` is None."""

    def __init__(self, path: Path | None, *, max_messages: int) -> None:
        if max_messages < 1:
            raise ValueError(f"max_messages must be at least 1, got {max_messages}")
        self._path = path
        self._acked_path = None if path is None else path.with_name(path.name + ".acked")
        self._max = max_messages
        self._pending: deque[Envelope] = deque()
        self._fd: int | None = None
        self._lock_fd: int | None = None
        self._size = 0
        """Bytes in the spool file (to cut off a half-written append after a write error)."""
        self._acked = 0
        """Leading records of the file already delivered (the sidecar's number)."""
        self._first_id: str | None = None
        """Message id of the file's first record, stored with the count in the sidecar."""
        self.torn = 0
        """Torn last lines dropped by the last `open` (a crash in the middle of a write)."""
        self.corrupt = 0
        """Complete lines that did not parse, dropped by the last `open`."""
        self.recovered = 0
        """Pending records found by the last `open`."""

    @property
    def path(self) -> Path | None:
        return self._path

    def __len__(self) -> int:
        return len(self._pending)

    @property
    def room(self) -> int:
        return max(0, self._max - len(self._pending))

    # -------------------------------------------------------------------------------- lifecycle

    def open(self) -> int:
        """Recover pending records from the file (if any) and open it for appending; returns how
        many were recovered. Memory-only spools do nothing and return 0."""
        if self._path is None:
            return 0
        if self._fd is not None:
            raise RuntimeError(f"spool {self._path} is already open")
        assert self._acked_path is not None
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._lock()
        self._pending.clear()
        self.torn = self.corrupt = self.recovered = 0
        acked, acked_first = self._read_acked()
        positions = 0
        pending: list[Envelope] = []
        if self._path.exists():
            with self._path.open("rb") as file:
                for line in file:
                    if not line.endswith(b"\n"):
                        self.torn += 1  # only the last line can lack its newline
                        break
                    positions += 1
                    if positions == 1 and acked and _message_id_of(line) != acked_first:
                        acked = 0  # a stale sidecar of an earlier file: redeliver, never skip
                    if positions <= acked:
                        continue
                    try:
                        pending.append(_load_record(line))
                    except (ValueError, KeyError, TypeError):
                        self.corrupt += 1
        if pending and (acked or self.torn or self.corrupt):
            # Leave exactly the pending records in the file: appends then start on a clean line,
            # and every later position/ack count refers to a pending record.
            self._rewrite(pending)
        self._pending.extend(pending)
        # 0o600: the spool holds trading messages; other local users have no business there.
        self._fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._size = os.fstat(self._fd).st_size
        self._acked = 0
        self._first_id = pending[0].message_id if pending else None
        if not pending:
            self._reset_file()
        self.recovered = len(pending)
        return self.recovered

    def close(self) -> None:
        """Close the file; it is removed when nothing is pending, kept otherwise."""
        if self._fd is None:
            self._unlock()
            return
        fd, self._fd = self._fd, None
        os.close(fd)
        if not self._pending and self._path is not None:
            self._path.unlink(missing_ok=True)
        self._unlock()

    def _lock(self) -> None:
        """One process per spool file: a second engine with the same client id would truncate
        and re-send the first one's records."""
        assert self._path is not None
        lock_path = self._path.with_name(self._path.name + ".lock")
        fd = os.open(lock_path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise SpoolLockedError(
                f"spool {self._path} is in use by another process (same kafka.client_id and "
                "engine.run_dir); give each engine its own client_id"
            ) from None
        self._lock_fd = fd

    def _unlock(self) -> None:
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)  # closing releases the flock

    def detach_file(self) -> None:
        """Go on in memory only (the file cannot be written, e.g. disk full): pending records
        stay; the file keeps what it had, so a later start re-sends those (duplicates that
        consumers drop by message id) rather than losing them."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
        self._unlock()
        self._path = None

    def fsync(self) -> None:
        """Force the spool file to stable storage (survives an OS crash, costs milliseconds)."""
        if self._fd is not None:
            os.fsync(self._fd)

    # ---------------------------------------------------------------------------------- records

    def append(self, records: Sequence[Envelope], *, force: bool = False) -> None:
        """Add `records` (in order) after the pending ones; all or nothing. `force` ignores the
        bound (records the caller already owns and must not lose, e.g. at stop)."""
        if not force and len(records) > self.room:
            raise SpoolFull(len(records), self.room)
        if not records:
            return
        if self._path is not None:
            fd = self._require_open()
            data = b"".join(_dump_record(record) for record in records)
            try:
                view = memoryview(data)
                while view:  # one write in practice; regular files only write short on errors
                    written = os.write(fd, view)
                    view = view[written:]
            except OSError:
                # E.g. disk full: cut off what was written, so the file stays whole lines and
                # matches memory, then let the caller decide (the records are not spooled).
                with contextlib.suppress(OSError):  # if this fails too, open drops the torn line
                    os.ftruncate(fd, self._size)
                raise
            if not self._size:
                self._first_id = records[0].message_id
            self._size += len(data)
        self._pending.extend(records)

    def peek(self, n: int) -> list[Envelope]:
        """The oldest `n` (or fewer) pending records, left in place."""
        if n < 0:
            raise ValueError(f"n must not be negative, got {n}")
        return list(islice(self._pending, n))

    def ack(self, n: int) -> None:
        """The oldest `n` pending records were delivered: remove them (and persist that)."""
        if n < 0 or n > len(self._pending):
            raise ValueError(f"cannot acknowledge {n} of {len(self._pending)} pending record(s)")
        if n == 0:
            return
        if self._path is not None:
            self._require_open()
        for _ in range(n):
            self._pending.popleft()
        if self._path is None:
            return
        if not self._pending:
            self._reset_file()
            return
        self._acked += n
        self._write_acked(self._acked)

    # --------------------------------------------------------------------------------- internals

    def _require_open(self) -> int:
        if self._fd is None:
            raise RuntimeError(f"spool {self._path} is not open (call open() first)")
        return self._fd

    def _reset_file(self) -> None:
        """Nothing pending: empty the file, then drop the sidecar (in this order: a crash in
        between leaves a count above the file's length, which `open` reads as all delivered;
        the other order would make `open` redeliver the whole file)."""
        assert self._fd is not None
        assert self._acked_path is not None
        if self._size:
            os.ftruncate(self._fd, 0)
        self._acked_path.unlink(missing_ok=True)
        self._size = self._acked = 0
        self._first_id = None

    def _rewrite(self, records: Sequence[Envelope]) -> None:
        """Replace the file by one holding exactly `records` (at `open` only, so the fsync that
        makes the replacement safe against an OS crash is paid once)."""
        assert self._path is not None
        assert self._acked_path is not None
        tmp = self._path.with_name(self._path.name + ".tmp")
        data = b"".join(_dump_record(record) for record in records)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        # Sidecar first: a crash between the two leaves the old file with no delivered count,
        # i.e. duplicates, never a count applied to the new, shorter file (lost records).
        self._acked_path.unlink(missing_ok=True)
        os.replace(tmp, self._path)

    def _read_acked(self) -> tuple[int, str | None]:
        """(delivered count, message id of the file's first record); (0, None) when missing or
        unreadable, i.e. everything is delivered again (at-least-once)."""
        assert self._acked_path is not None
        try:
            obj = json.loads(self._acked_path.read_bytes())
        except (OSError, ValueError):
            return 0, None
        if not isinstance(obj, dict):
            return 0, None
        count, first = obj.get("acked"), obj.get("first")
        if type(count) is not int or count < 0 or not isinstance(first, str):
            return 0, None
        return count, first

    def _write_acked(self, count: int) -> None:
        assert self._acked_path is not None
        tmp = self._acked_path.with_name(self._acked_path.name + ".tmp")
        tmp.write_bytes(json.dumps({"acked": count, "first": self._first_id}).encode() + b"\n")
        os.replace(tmp, self._acked_path)
