"""The test kit itself: the tansu fixture answers Kafka clients and kcat round-trips through it."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.kit.kafka import Kcat, TansuBroker, create_topics, metadata_probe

ROOT = Path(__file__).resolve().parents[2]


async def test_produce_when_kcat_sends_a_record_with_headers_then_kcat_reads_it_back(
    kafka_broker: TansuBroker, kcat: Kcat
) -> None:
    # Arrange: one partition so offsets are predictable; a value kcat's stdin mode would split
    await create_topics(kafka_broker.bootstrap, "kit.roundtrip")
    value = b'{"a": 1}\nsecond line\x00\x01'
    # Act
    kcat.produce(
        kafka_broker.bootstrap,
        "kit.roundtrip",
        value,
        key=b"AAPL",
        headers=[("type", "Signal"), ("traceparent", "00-abc=def-01")],
    )
    kcat.produce(kafka_broker.bootstrap, "kit.roundtrip", b"no key, no headers")
    records = kcat.consume(kafka_broker.bootstrap, "kit.roundtrip", count=2)
    # Assert
    assert [r["offset"] for r in records] == [0, 1]
    first, second = records
    assert first["partition"] == 0
    assert first["key"] == "AAPL"
    assert first["payload"].encode() == value
    assert first["headers"] == [["type", "Signal"], ["traceparent", "00-abc=def-01"]]
    assert second["key"] is None
    assert second["payload"] == "no key, no headers"
    assert second["headers"] == []


def test_consume_when_fewer_records_than_asked_then_times_out_with_count(
    kafka_broker: TansuBroker, kcat: Kcat
) -> None:
    # Arrange
    kcat.produce(kafka_broker.bootstrap, "kit.short", b"only one")
    # Act / Assert
    with pytest.raises(TimeoutError, match=r"1 record\(s\) received"):
        kcat.consume(kafka_broker.bootstrap, "kit.short", count=2, timeout_s=1.5)


def test_restart_when_broker_restarted_then_same_port_and_empty(kcat: Kcat) -> None:
    # Arrange
    with TansuBroker() as broker:
        port = broker.port
        kcat.produce(broker.bootstrap, "kit.before", b"x")
        # Act
        broker.stop()
        down = not broker.running and not metadata_probe(port)
        broker.restart()
        # Assert
        assert down
        assert broker.running
        assert broker.port == port
        assert metadata_probe(port)
    assert not broker.running


def test_start_when_port_is_taken_then_fails_with_broker_output() -> None:
    # Arrange: a plain socket holds the port the broker is told to use
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        broker = TansuBroker(holder.getsockname()[1])
        # Act / Assert
        with pytest.raises(pytest.fail.Exception, match="tansu broker on port"):
            broker.start()
    assert not broker.running


@pytest.mark.parametrize("ending", ["exit", "sigkill"])
def test_test_process_ends_when_broker_not_stopped_then_broker_is_gone(ending: str) -> None:
    # Arrange: a test process that starts a broker and never stops it
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        from tests.kit.kafka import TansuBroker
        broker = TansuBroker()
        broker.start()
        print(broker.pid, flush=True)
        if {ending!r} == "sigkill":
            os.kill(os.getpid(), signal.SIGKILL)  # no atexit: the kernel's death signal
        sys.exit(0)  # atexit guard
        """
    )
    # Act
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=30
    )
    # Assert
    pid = int(result.stdout.split()[0])
    deadline = time.monotonic() + 5.0
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not _alive(pid), f"broker {pid} outlived its test process ({ending})"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by init) counts as gone.
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    return True
