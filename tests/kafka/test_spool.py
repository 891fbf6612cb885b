"""The outage spool: order kept, bound enforced, delivered records forgotten, and nothing that
`append` accepted lost when the process is closed or killed (at-least-once on reopen)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.kafka import spool as spool_module
from engine.kafka.envelope import Envelope
from engine.kafka.spool import Spool, SpoolFull, SpoolLockedError

ROOT = Path(__file__).resolve().parents[2]


def _record(i: int, *, value: bytes | None = None) -> Envelope:
    return Envelope(
        topic="tradeengine.signals",
        key=f"K{i}".encode(),
        value=value if value is not None else f'{{"n":{i}}}'.encode(),
        headers=(("type", b"Signal"), ("message-id", f"m{i}".encode())),
        message_id=f"m{i}",
    )


def _records(start: int, stop: int) -> list[Envelope]:
    return [_record(i) for i in range(start, stop)]


def _opened(path: Path | None, max_messages: int = 100) -> Spool:
    spool = Spool(path, max_messages=max_messages)
    spool.open()
    return spool


def _killed(spool: Spool) -> None:
    """What a SIGKILL does to an open spool: nothing is flushed or closed, but the OS releases
    the process' lock on the file."""
    os.close(spool._lock_fd)  # type: ignore[arg-type]
    spool._lock_fd = None


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "kafka-spool" / "tradeengine.spool"


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".acked")


# -------------------------------------------------------------------------------- in one process


def test_append_when_records_added_in_batches_then_peek_returns_them_in_order(path: Path) -> None:
    # Arrange
    spool = _opened(path)
    # Act
    spool.append(_records(0, 3))
    spool.append(_records(3, 5))
    # Assert
    assert len(spool) == 5
    assert spool.peek(10) == _records(0, 5)
    assert spool.peek(2) == _records(0, 2)
    assert len(spool) == 5  # peek does not remove
    assert spool.room == 95
    spool.close()


def test_append_when_batch_then_written_with_one_write_call(
    monkeypatch: pytest.MonkeyPatch, path: Path
) -> None:
    # Arrange
    spool = _opened(path)
    writes: list[int] = []
    real_write = os.write

    def counting_write(fd: int, data: bytes | memoryview) -> int:
        writes.append(len(data))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", counting_write)  # the module the spool calls
    # Act
    spool.append(_records(0, 50))
    # Assert
    assert len(writes) == 1
    assert writes[0] == path.stat().st_size
    spool.close()


def test_append_when_more_than_room_then_spool_full_and_nothing_appended(path: Path) -> None:
    # Arrange
    spool = _opened(path, max_messages=4)
    spool.append(_records(0, 3))
    size_before = path.stat().st_size
    # Act
    with pytest.raises(SpoolFull) as raised:
        spool.append(_records(3, 5))
    # Assert
    assert raised.value.wanted == 2
    assert raised.value.room == 1
    assert spool.peek(10) == _records(0, 3)
    assert path.stat().st_size == size_before
    spool.append(_records(3, 4))  # exactly the room left still fits
    assert spool.room == 0
    spool.close()


def test_ack_when_oldest_delivered_then_removed_and_count_persisted(path: Path) -> None:
    # Arrange
    spool = _opened(path)
    spool.append(_records(0, 5))
    # Act
    spool.ack(2)
    spool.ack(1)
    # Assert
    assert spool.peek(10) == _records(3, 5)
    assert json.loads(_sidecar(path).read_text()) == {"acked": 3, "first": "m0"}
    assert not list(path.parent.glob("*.tmp"))
    spool.close()


def test_ack_when_more_than_pending_then_value_error_and_nothing_removed(path: Path) -> None:
    # Arrange
    spool = _opened(path)
    spool.append(_records(0, 2))
    # Act / Assert
    with pytest.raises(ValueError, match="cannot acknowledge 3 of 2"):
        spool.ack(3)
    assert len(spool) == 2
    spool.close()


def test_ack_when_everything_delivered_then_file_truncated_and_sidecar_removed(
    path: Path,
) -> None:
    # Arrange
    spool = _opened(path)
    spool.append(_records(0, 4))
    spool.ack(1)
    # Act
    spool.ack(3)
    # Assert
    assert len(spool) == 0
    assert path.stat().st_size == 0
    assert not _sidecar(path).exists()
    spool.append(_records(4, 5))  # the file is reused from its start
    assert path.read_bytes().count(b"\n") == 1
    spool.close()


def test_close_when_nothing_pending_then_file_removed(path: Path) -> None:
    # Arrange
    spool = _opened(path)
    spool.append(_records(0, 2))
    spool.ack(2)
    # Act
    spool.close()
    # Assert
    assert not path.exists()
    assert not _sidecar(path).exists()


def test_append_when_not_open_then_runtime_error(path: Path) -> None:
    # Arrange
    spool = Spool(path, max_messages=10)
    # Act / Assert
    with pytest.raises(RuntimeError, match="not open"):
        spool.append(_records(0, 1))
    assert len(spool) == 0
    assert not path.parent.exists()  # __init__ does no I/O


# ---------------------------------------------------------------------------------- recovery


def test_open_when_reopened_after_close_then_exactly_unacked_records_in_order(path: Path) -> None:
    # Arrange
    first = _opened(path)
    first.append(_records(0, 6))
    first.ack(2)
    first.close()
    second = Spool(path, max_messages=100)
    # Act
    recovered = second.open()
    # Assert
    assert recovered == 4
    assert second.recovered == 4
    assert second.peek(10) == _records(2, 6)
    assert (second.torn, second.corrupt) == (0, 0)
    second.ack(1)  # acks keep counting from the recovered records
    second.close()
    third = _opened(path)
    assert third.peek(10) == _records(3, 6)
    third.close()


def test_open_when_killed_mid_write_then_complete_records_recovered_and_torn_counted(
    path: Path,
) -> None:
    # Arrange: no close (SIGKILL), and half a line at the end (killed inside a write)
    killed = _opened(path)
    killed.append(_records(0, 3))
    killed.ack(1)
    with path.open("ab") as file:
        file.write(b'{"message_id":"m3","topic":"tradeeng')
    _killed(killed)
    fresh = Spool(path, max_messages=100)
    # Act
    recovered = fresh.open()
    # Assert
    assert recovered == 2
    assert fresh.torn == 1
    assert fresh.peek(10) == _records(1, 3)
    fresh.append(_records(3, 4))  # appends start on a clean line
    fresh.close()
    again = _opened(path)
    assert again.peek(10) == _records(1, 4)
    assert again.torn == 0
    again.close()
    killed.close()


def test_open_when_real_process_sigkilled_after_append_then_nothing_lost(path: Path) -> None:
    # Arrange: a child process spools, acknowledges some, and kills itself without closing
    script = f"""
import os, signal
from pathlib import Path
from engine.kafka.spool import Spool
from tests.kafka.test_spool import _records
spool = Spool(Path({str(path)!r}), max_messages=100)
spool.open()
spool.append(_records(0, 5))
spool.ack(2)
spool.append(_records(5, 7))
os.kill(os.getpid(), signal.SIGKILL)
"""
    child = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, timeout=60, check=False
    )
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()
    spool = Spool(path, max_messages=100)
    # Act
    recovered = spool.open()
    # Assert
    assert recovered == 5
    assert spool.peek(10) == _records(2, 7)
    spool.close()


def test_open_when_killed_after_delivery_before_ack_then_records_delivered_again(
    path: Path,
) -> None:
    # Arrange: the records reached the broker, the process died before `ack`
    killed = _opened(path)
    killed.append(_records(0, 3))
    delivered = killed.peek(3)
    _killed(killed)
    fresh = Spool(path, max_messages=100)
    # Act
    fresh.open()
    # Assert: at-least-once; the consumer drops them again by message id
    assert fresh.peek(10) == delivered
    fresh.close()
    killed.close()


def test_open_when_complete_line_unreadable_then_dropped_and_counted(path: Path) -> None:
    # Arrange
    spool = _opened(path)
    spool.append(_records(0, 2))
    spool.close()
    with path.open("ab") as file:
        file.write(b"\x00\x00\x00\n")
    with path.open("ab") as file:
        file.write(b'{"message_id":"x"}\n')
    fresh = Spool(path, max_messages=100)
    # Act
    fresh.open()
    fresh.append(_records(2, 3))
    fresh.ack(1)
    fresh.close()
    # Assert: the unreadable lines are gone for good and the ack count still lines up
    assert fresh.corrupt == 2
    again = _opened(path)
    assert again.peek(10) == _records(1, 3)
    assert again.corrupt == 0
    again.close()


def test_open_when_sidecar_counts_more_than_file_then_nothing_pending(path: Path) -> None:
    # Arrange: crash between emptying the drained file and removing the sidecar
    path.parent.mkdir(parents=True)
    path.write_bytes(b"")
    _sidecar(path).write_text('{"acked": 7, "first": "m0"}\n')
    spool = Spool(path, max_messages=100)
    # Act
    recovered = spool.open()
    # Assert
    assert recovered == 0
    assert not _sidecar(path).exists()
    spool.append(_records(0, 1))
    spool.close()
    again = _opened(path)
    assert again.peek(10) == _records(0, 1)
    again.close()


def test_open_when_sidecar_belongs_to_an_earlier_file_then_ignored(path: Path) -> None:
    # Arrange: an OS crash lost the sidecar's removal; the file has been refilled since
    spool = _opened(path)
    spool.append(_records(5, 8))
    spool.close()
    _sidecar(path).write_text('{"acked": 2, "first": "m0"}\n')
    fresh = Spool(path, max_messages=100)
    # Act
    recovered = fresh.open()
    # Assert: redelivered rather than skipped
    assert recovered == 3
    assert fresh.peek(10) == _records(5, 8)
    fresh.close()


def test_room_when_more_recovered_than_max_messages_then_kept_and_room_zero(path: Path) -> None:
    # Arrange
    big = _opened(path, max_messages=10)
    big.append(_records(0, 8))
    big.close()
    small = Spool(path, max_messages=5)
    # Act
    small.open()
    # Assert
    assert len(small) == 8
    assert small.room == 0
    with pytest.raises(SpoolFull):
        small.append(_records(8, 9))
    small.close()


byte_strings = st.binary(max_size=64) | st.sampled_from(
    (b"", b"\n", b"\r\n", b"\x00", b"\xff\xfe", "\u00e9\u2028\U0001f600".encode(), b'"}\\')
)


@settings(max_examples=60, deadline=None)
@given(
    key=st.none() | byte_strings,
    value=byte_strings,
    headers=st.lists(st.tuples(st.text(max_size=8), byte_strings), max_size=4),
    message_id=st.text(max_size=16),
    topic=st.text(min_size=1, max_size=16),
)
def test_open_when_records_hold_arbitrary_bytes_then_round_trip_exactly(
    key: bytes | None,
    value: bytes,
    headers: list[tuple[str, bytes]],
    message_id: str,
    topic: str,
) -> None:
    # Arrange
    record = Envelope(
        topic=topic, key=key, value=value, headers=tuple(headers), message_id=message_id
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s.spool"
        first = _opened(path)
        first.append([record, _record(1)])
        first.close()
        # Act
        second = _opened(path)
        recovered = second.peek(10)
        second.close()
    # Assert
    assert recovered == [record, _record(1)]
    assert second.corrupt == 0


# ------------------------------------------------------------------------------- memory only


class _NoOs:
    """Stands in for the `os` module: any file-system call fails the test."""

    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"memory-only spool called os.{name}")


def test_spool_when_memory_only_then_no_file_io(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Arrange
    monkeypatch.setattr(spool_module, "os", _NoOs())
    monkeypatch.chdir(tmp_path)
    spool = Spool(None, max_messages=3)
    # Act
    recovered = spool.open()
    spool.append(_records(0, 2))
    with pytest.raises(SpoolFull):
        spool.append(_records(2, 4))
    spool.ack(1)
    spool.fsync()
    pending = spool.peek(5)
    spool.close()
    # Assert
    assert recovered == 0
    assert spool.path is None
    assert pending == _records(1, 2)
    assert len(spool) == 1
    assert os.listdir(tmp_path) == []


def test_open_when_another_spool_holds_the_file_then_locked_error_and_nothing_touched(
    path: Path,
) -> None:
    # Arrange: a second engine with the same client id and run dir
    first = _opened(path)
    first.append(_records(0, 2))
    second = Spool(path, max_messages=100)
    # Act
    with pytest.raises(SpoolLockedError, match="in use by another process"):
        second.open()
    # Assert: the first one's records are intact, and it can reopen after closing
    first.close()
    again = _opened(path)
    assert again.peek(10) == _records(0, 2)
    again.close()
