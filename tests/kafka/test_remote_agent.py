"""A replay with one agent in a separate process over Kafka makes exactly the decisions of the
all-in-process replay (same journal tables, byte for byte)."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from config import load_config
from engine.execution.journal import Journal
from engine.kafka.remote import RemoteAgentError, RemoteAgentHost
from tests.e2e.conftest import ROOT, replay
from tests.kit.kafka import TansuBroker, create_topics

REMOTE = "calendar"
START, END = date(2003, 1, 1), date(2005, 6, 30)


def _config_file(
    tmp_path: Path, bootstrap: str, *, remote: bool, silence_timeout_s: float = 30.0
) -> Path:
    """engine.toml with the bridge on `bootstrap` and, if `remote`, REMOTE run remotely."""
    text = (ROOT / "engine.toml").read_text()
    text = re.sub(r'(?m)^run_dir = "runs"', f'run_dir = "{tmp_path / "runs"}"', text)
    text = re.sub(r"(?m)^port = 9464 ", "port = 0 ", text)
    if remote:
        # remote instead of in the local worker process engine.toml puts it in
        blocks = text.split("[[agents]]")
        (i,) = [i for i, b in enumerate(blocks) if f'name = "{REMOTE}"' in b]
        blocks[i] = blocks[i].replace("worker = 1\n", "remote = true\n")
        assert "remote = true" in blocks[i]
        text = "[[agents]]".join(blocks)
    kafka = f"""[kafka]
enabled = true
bootstrap_servers = ["{bootstrap}"]

[kafka.producer]
linger_ms = 0

[kafka.consumer]
session_timeout_ms = 1500
heartbeat_interval_ms = 500
fetch_max_wait_ms = 5

[kafka.remote_agents]
silence_timeout_s = {silence_timeout_s}

"""
    text = text[: text.index("\n[kafka]") + 1] + kafka + text[text.index("\n[telemetry]") + 1 :]
    path = tmp_path / ("remote.toml" if remote else "local.toml")
    path.write_text(text)
    return path


def _start_host(tmp_path: Path, config: Path, *, stderr: Any) -> subprocess.Popen[bytes]:
    """`tradeengine agent run --once` for REMOTE in its own process; `stderr` a file or PIPE
    (a file when nobody reads it: a full pipe would block the host)."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "engine.cli",
            "agent",
            "run",
            "--config",
            str(config),
            "--agent",
            REMOTE,
            "--once",
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.DEVNULL,
        stderr=stderr,
    )


async def _digests(run_dir: Path) -> dict[str, str]:
    journal = Journal(run_dir / "journal.sqlite")
    return {t: journal.table_digest(t) for t in ("decisions", "orders", "fills", "snapshots")}


async def test_replay_when_one_agent_runs_in_another_process_then_same_decisions_as_in_process(
    kafka_broker: TansuBroker, tmp_path: Path
) -> None:
    # Arrange: the topics (one partition each), then the remote agent process
    await create_topics(
        kafka_broker.bootstrap, "tradeengine.feed", "tradeengine.agents", "tradeengine.dlq"
    )
    local_cfg = load_config(_config_file(tmp_path, kafka_broker.bootstrap, remote=False), env={})
    remote_file = _config_file(tmp_path, kafka_broker.bootstrap, remote=True)
    remote_cfg = load_config(remote_file, env={})
    assert remote_cfg.config_hash() == local_cfg.config_hash()
    log_file = (tmp_path / "host.log").open("wb")
    host = _start_host(tmp_path, remote_file, stderr=log_file)
    try:
        # Act
        in_process = await replay(local_cfg, tmp_path / "local", START, END)
        remote_run = await replay(remote_cfg, tmp_path / "remote", START, END)
        exit_code = await asyncio.to_thread(host.wait, 60)
    finally:
        if host.poll() is None:
            host.kill()
            host.wait()
        log_file.close()
        log = (tmp_path / "host.log").read_text()
    # Assert
    assert exit_code == 0, log[-3000:]
    assert in_process.completed
    assert remote_run.completed
    supervisor = remote_run.engine.supervisor
    assert supervisor is not None
    assert REMOTE not in supervisor.runners
    blender = remote_run.engine.blender
    assert blender is not None
    assert blender.stats.late_signals == 0
    assert REMOTE in blender.agents
    assert in_process.rows("SELECT count(*) AS n FROM decisions")[0]["n"] > 0
    assert await _digests(remote_run.run_dir) == await _digests(in_process.run_dir)
    bridge = remote_run.engine.kafka
    assert bridge is not None
    assert bridge.ingress is not None
    local_signals = in_process.engine.summary(completed=True).agents[REMOTE]["signals"]
    workers = remote_run.engine.workers  # engine.toml runs other agents in a worker process
    local_agents: dict[str, Any] = {**supervisor.runners, **(workers.agents if workers else {})}
    remote_signals = remote_run.engine.blender.stats.signals - sum(
        agent.stats.signals for agent in local_agents.values()
    )
    print(f"{REMOTE}: {local_signals} signals in process, {remote_signals} over Kafka")
    assert local_signals > 100
    assert remote_signals == local_signals
    assert bridge.ingress.stats.rejected == {}


def test_agent_host_when_agent_not_marked_remote_then_clear_error(tmp_path: Path) -> None:
    # Arrange
    cfg = load_config(_config_file(tmp_path, "127.0.0.1:1", remote=False), env={})
    # Act
    with pytest.raises(RemoteAgentError) as caught:
        RemoteAgentHost(cfg, REMOTE)
    # Assert
    assert "remote = false" in str(caught.value)


async def test_replay_when_remote_agent_process_dies_then_quarantined_and_run_completes(
    kafka_broker: TansuBroker, tmp_path: Path
) -> None:
    # Arrange
    await create_topics(
        kafka_broker.bootstrap, "tradeengine.feed", "tradeengine.agents", "tradeengine.dlq"
    )
    remote_file = _config_file(tmp_path, kafka_broker.bootstrap, remote=True, silence_timeout_s=2.0)
    host = _start_host(tmp_path, remote_file, stderr=subprocess.PIPE)

    async def kill_soon() -> None:
        # Kill it mid-run: once it has joined (its log says so) and worked for a while.
        assert host.stderr is not None
        while True:
            line = await asyncio.to_thread(host.stderr.readline)
            if not line or b"joined run" in line:
                break
        await asyncio.sleep(2.0)
        host.kill()

    killer = asyncio.create_task(kill_soon())
    try:
        # Act
        run = await replay(load_config(remote_file, env={}), tmp_path / "run", START, END)
    finally:
        killer.cancel()
        if host.poll() is None:
            host.kill()
        host.wait()
        if host.stderr is not None:
            host.stderr.close()
    # Assert: the run went on without the agent, like with a quarantined local one
    assert run.completed
    blender = run.engine.blender
    assert blender is not None
    assert blender.stats.quarantined_agents == [REMOTE]
    health = {c.name: c.state.value for c in run.engine.health.components()}
    assert health[f"agent.{REMOTE}"] == "FAULTED"
