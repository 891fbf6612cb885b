"""Fixtures of the Kafka tests: a fresh tansu broker per test and the kcat client.

A broker per test (function scope) rather than per session: tansu starts in milliseconds, and
topics, consumer groups and offsets left by one test can never leak into the next.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.kit.kafka import Kcat, TansuBroker


@pytest.fixture
def kafka_broker() -> Iterator[TansuBroker]:
    """A started, empty tansu broker on a free port; stopped after the test."""
    with TansuBroker() as broker:
        yield broker


@pytest.fixture
def kcat() -> Kcat:
    """Debian's kcat, run with the confluent-kafka wheel's librdkafka."""
    return Kcat()
