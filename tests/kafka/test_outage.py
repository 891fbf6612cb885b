"""Outage survival: the broker goes away mid-replay, the engine keeps trading and spools; a new
broker comes up and every message produced during the outage arrives, exactly once after dedup
by message id. The same across a killed engine process (the file spool)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from datetime import date, datetime
from pathlib import Path

from config.models import KafkaEgressRoute
from engine.app import Engine, RunOptions
from engine.kafka.bridge import spool_path
from engine.kafka.envelope import H_MESSAGE_ID, H_PRODUCER_ID, Envelope
from engine.kafka.ingress import DedupWindow
from engine.kafka.spool import Spool
from tests.e2e.conftest import ROOT
from tests.kit.config import on_free_port
from tests.kit.kafka import TansuBroker

from .helpers import consume_all, headers_of, wait_until
from .test_engine_kafka import SIGNALS, engine_with_kafka


def _ids_once_after_dedup(records: list[object], window: int = 1_000_000) -> tuple[list[str], int]:
    """Message ids as a consumer sees them after the ingress' dedup, and the duplicates dropped."""
    dedup = DedupWindow(window)
    kept: list[str] = []
    duplicates = 0
    for record in records:
        message_id = headers_of(record)[H_MESSAGE_ID].decode()
        if message_id in dedup:
            duplicates += 1
            continue
        dedup.add(message_id)
        kept.append(message_id)
    return kept, duplicates


async def test_replay_when_broker_stops_mid_run_then_trading_goes_on_and_outage_arrives_once(
    kafka_broker: TansuBroker, tmp_path: Path
) -> None:
    # Arrange
    cfg = engine_with_kafka(
        kafka_broker,
        tmp_path,
        auto_create_topics=True,
        egress=[KafkaEgressRoute(bus_pattern="signal.>", topic=SIGNALS)],
    )
    engine = Engine(
        on_free_port(cfg),
        options=RunOptions(
            start=date(2003, 1, 1), end=date(2005, 12, 31), run_dir=tmp_path / "run", base_dir=ROOT
        ),
    )
    engine.prepare()
    acked_by_old_broker: set[str] = set()
    phase = {"name": "up", "stopped_at_step": -1, "restarted_at_step": -1}

    def on_delivered(envs: object) -> None:
        if phase["name"] != "restarted":
            acked_by_old_broker.update(e.message_id for e in envs)  # type: ignore[attr-defined]

    def on_step(index: int, _ts: datetime) -> None:
        egress = engine.kafka.egress if engine.kafka is not None else None
        assert egress is not None
        if phase["name"] == "up" and index == 250:
            kafka_broker.stop()
            phase.update(name="down", stopped_at_step=index)
        elif phase["name"] == "down" and not egress.healthy and egress.spool_depth >= 500:
            kafka_broker.restart()  # a new, empty broker on the same port
            phase.update(name="restarted", restarted_at_step=index)

    # Act
    async with engine:
        assert engine.kafka is not None
        assert engine.kafka.egress is not None
        egress = engine.kafka.egress
        egress.delivery_listeners.append(on_delivered)
        completed = await engine.run(on_step=on_step)
        steps = engine.steps_total
    encoded = egress.stats.encoded
    # Everything on the new broker (duplicates included), not just `encoded` records.
    records = await consume_all(kafka_broker.bootstrap, SIGNALS, count=None, timeout_s=60)
    # Assert: trading went on through the outage, to the end of the replay
    assert completed
    assert phase["name"] == "restarted", f"the outage never filled the spool: {phase}"
    assert steps is not None
    assert engine.pipeline is not None
    assert engine.pipeline.stats.steps == steps
    assert egress.stats.outages >= 1
    assert egress.stats.spooled >= 500
    assert egress.stats.drained >= 500
    # ... and every message the old broker did not acknowledge arrived once after dedup
    producer = egress.producer_id
    everything = {f"{producer}-{n}" for n in range(1, encoded + 1)}
    expected = everything - acked_by_old_broker
    kept, duplicates = _ids_once_after_dedup(records)
    assert all(headers_of(r)[H_PRODUCER_ID].decode() == producer for r in records)
    assert len(kept) == len(set(kept)) == len(expected)
    assert set(kept) == expected
    print(
        f"outage: {len(expected)} messages after the outage began, {duplicates} duplicates dropped"
    )


def _engine_toml(tmp_path: Path, bootstrap: str) -> Path:
    """engine.toml with a short agent set, the run dir in tmp_path and the bridge enabled."""
    text = (ROOT / "engine.toml").read_text()
    text = re.sub(r'(?m)^run_dir = "runs"', f'run_dir = "{tmp_path / "runs"}"', text)
    text = re.sub(r"(?m)^port = 9464 ", "port = 0 ", text)
    kafka = f"""[kafka]
enabled = true
bootstrap_servers = ["{bootstrap}"]
auto_create_topics = true
egress = [{{ bus_pattern = "signal.>", topic = "{SIGNALS}" }}]

[kafka.producer]
request_timeout_ms = 1000
linger_ms = 2

[kafka.spool]
reconnect_backoff_initial_s = 0.05
reconnect_backoff_max_s = 0.5

"""
    start = text.index("\n[kafka]") + 1
    end = text.index("\n[telemetry]") + 1
    text = text[:start] + kafka + text[end:]
    path = tmp_path / "engine.toml"
    path.write_text(text)
    return path


def _pending_ids(path: Path) -> list[Envelope]:
    spool = Spool(path, max_messages=10_000_000)
    spool.open()
    try:
        return spool.peek(len(spool))
    finally:
        spool.close()


async def test_engine_when_killed_during_outage_then_restart_sends_its_file_spool_once(
    kafka_broker: TansuBroker, tmp_path: Path
) -> None:
    # Arrange: engine A runs the full default replay in its own process
    config_file = _engine_toml(tmp_path, kafka_broker.bootstrap)
    spool_file = spool_path(tmp_path / "runs", "tradeengine")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    log_file = (tmp_path / "engine-a.log").open("wb")
    proc = subprocess.Popen(  # noqa: ASYNC220 - started, not waited for, on the loop
        [sys.executable, "-m", "engine.cli", "run", "--config", str(config_file), "--paper"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        # A file, not a pipe: nobody reads it during the run, and a full pipe would block the
        # engine's logging (and so the engine).
        stderr=log_file,
    )
    try:
        # Act 1: let it trade, stop the broker, wait for the spool file to fill, kill -9
        await asyncio.sleep(8.0)
        assert proc.poll() is None, (tmp_path / "engine-a.log").read_text()[-3000:]
        kafka_broker.stop()
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if spool_file.exists() and spool_file.stat().st_size > 600_000:
                break
            assert proc.poll() is None, "engine A ended before the spool filled"
            await asyncio.sleep(0.1)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log_file.close()
    pending = _pending_ids(spool_file)
    assert len(pending) > 300
    # Act 2: a new (empty) broker, and engine B on the same spool, in process
    kafka_broker.restart()
    cfg = engine_with_kafka(
        kafka_broker,
        tmp_path,
        auto_create_topics=True,
        egress=[KafkaEgressRoute(bus_pattern="signal.>", topic=SIGNALS)],
    )
    engine = Engine(
        on_free_port(cfg),
        options=RunOptions(
            start=date(2005, 1, 1), end=date(2005, 1, 31), run_dir=tmp_path / "b", base_dir=ROOT
        ),
    )
    engine.prepare()
    async with engine:
        assert engine.kafka is not None
        assert engine.kafka.egress is not None
        egress = engine.kafka.egress
        await engine.run()
        await wait_until(lambda: egress.spool_depth == 0, 30, "the spool to drain")
    records = await consume_all(kafka_broker.bootstrap, SIGNALS, count=None, timeout_s=60)
    # Assert: every message A spooled arrived, exactly once after dedup
    assert egress.stats.recovered_from_file == len(pending)
    kept, _duplicates = _ids_once_after_dedup(records)
    a_ids = {e.message_id for e in pending}
    a_seen = [i for i in kept if i in a_ids]
    assert len(a_seen) == len(a_ids) == len(pending)
    assert set(a_seen) == a_ids
    assert not spool_file.exists() or spool_file.stat().st_size == 0
