"""The engine <-> agent worker pipe: frames round-trip; a corrupt stream is a FrameError."""

from __future__ import annotations

import asyncio
import pickle
from datetime import UTC, datetime

import pytest

from contracts import AgentStatus, Bar, Signal, Watermark, topics
from contracts.enums import AgentState
from engine.agent_host import agent_output_check
from engine.workers.frames import (
    HEADER,
    MAX_FRAME_BYTES,
    Feed,
    FrameError,
    Output,
    Ready,
    Stop,
    encode,
    read_from_engine,
    read_from_worker,
)

TS = datetime(2001, 2, 5, 21, tzinfo=UTC)
TRACE = "0123456789abcdef0123456789abcdef"


def _reader(data: bytes, *, eof: bool = True) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    if eof:
        reader.feed_eof()
    return reader


def _signal(agent: str = "rsi") -> Signal:
    return Signal(
        trace_id=TRACE,
        ts_event=TS,
        ts_init=TS,
        agent=agent,
        symbol="KO",
        mu=0.001,
        sigma=0.02,
        horizon="1w",
        confidence=0.4,
        features={"score": 1.5},
    )


async def test_read_when_frames_encoded_then_same_contracts_come_back_in_order() -> None:
    # Arrange
    bar = Bar(trace_id=TRACE, ts_event=TS, ts_init=TS, symbol="KO", close=51.25, interval="1d")
    wm = Watermark(trace_id=TRACE, ts_event=TS, ts_init=TS, origin="stocks")
    data = encode(Feed([("bar.KO", bar), ("watermark.source.stocks", wm)])) + encode(Stop())
    reader = _reader(data)
    # Act
    first = await read_from_engine(reader)
    second = await read_from_engine(reader)
    end = await read_from_engine(reader)
    # Assert
    assert isinstance(first, Feed)
    assert first.items == [("bar.KO", bar), ("watermark.source.stocks", wm)]
    assert first.items[0][1].model_dump_json() == bar.model_dump_json()  # type: ignore[attr-defined]
    assert isinstance(second, Stop)
    assert end is None


async def test_read_when_stream_ends_inside_header_then_frame_error() -> None:
    with pytest.raises(FrameError, match="inside a frame header"):
        await read_from_worker(_reader(b"\x00\x00"))


async def test_read_when_stream_ends_inside_payload_then_frame_error() -> None:
    data = encode(Ready(pid=42))
    with pytest.raises(FrameError, match=r"stream ended after \d+ of \d+ frame bytes"):
        await read_from_worker(_reader(data[:-3]))


async def test_read_when_payload_is_not_a_pickle_then_frame_error() -> None:
    payload = b"definitely not a pickle"
    with pytest.raises(FrameError, match="undecodable frame"):
        await read_from_worker(_reader(HEADER.pack(len(payload)) + payload))


async def test_read_when_length_above_limit_then_frame_error_without_reading_it() -> None:
    reader = _reader(HEADER.pack(MAX_FRAME_BYTES + 1), eof=False)
    with pytest.raises(FrameError, match="limit"):
        await read_from_worker(reader)


@pytest.mark.parametrize(
    ("payload", "reader_fn", "name"),
    [
        (Stop(), read_from_worker, "Stop"),  # an engine frame coming from a worker
        (Output([]), read_from_engine, "Output"),  # a worker frame coming from the engine
        ({"not": "a frame"}, read_from_worker, "dict"),
    ],
)
async def test_read_when_frame_of_the_other_direction_then_frame_error(
    payload: object, reader_fn: object, name: str
) -> None:
    data = pickle.dumps(payload)
    reader = _reader(HEADER.pack(len(data)) + data)
    with pytest.raises(FrameError, match=f"unexpected frame .*{name}"):
        await reader_fn(reader)  # type: ignore[operator]


def test_output_check_when_own_agents_outputs_then_accepted() -> None:
    check = agent_output_check(["rsi"])
    status = AgentStatus(
        trace_id=TRACE, ts_event=TS, ts_init=TS, agent="rsi", state=AgentState.RUNNING, reason=""
    )
    wm = Watermark(trace_id=TRACE, ts_event=TS, ts_init=TS, origin="rsi")
    assert check(topics.signal("rsi", "KO"), _signal()) is None
    assert check(topics.agent_watermark("rsi"), wm) is None
    assert check(topics.agent_status("rsi"), status) is None


def test_output_check_when_another_agents_signal_then_refused_with_reason() -> None:
    check = agent_output_check(["rsi"])
    reason = check(topics.signal("momentum", "KO"), _signal("momentum"))
    assert reason is not None
    assert "'momentum' is not hosted there" in reason


def test_output_check_when_watermark_on_a_source_topic_then_refused() -> None:
    check = agent_output_check(["rsi"])
    wm = Watermark(trace_id=TRACE, ts_event=TS, ts_init=TS, origin="rsi")
    reason = check(topics.source_watermark("rsi"), wm)
    assert reason is not None
    assert "only send agent watermarks" in reason


def test_output_check_when_market_data_then_refused() -> None:
    check = agent_output_check(["rsi"])
    bar = Bar(trace_id=TRACE, ts_event=TS, ts_init=TS, symbol="KO", close=51.25, interval="1d")
    reason = check("bar.KO", bar)
    assert reason == "Bar is not accepted from an agent host"
