"""Kafka topics the config needs: which they are, creating them, and the start-up check.

Why it exists: a topic that is missing or shaped wrongly (a remote-agent topic with several
partitions loses the order that step completion relies on) should stop a run before it starts,
with a message that says which topic, why it is needed and how to fix it; and the same
knowledge drives ``tradeengine topics create|describe``.

Trade-offs:

- Topics are looked up in the metadata of *all* topics, never by name: a metadata request that
  names a missing topic makes brokers with topic auto-creation (tansu always, Kafka by default)
  create it, with the broker's default partition count, and a check must not change what it
  checks.
- Creating is idempotent and never alters an existing topic: a topic that exists is reported as
  ``exists`` with its differences from the config (partitions, replication, retention.ms,
  cleanup.policy). Changing partitions of a live topic reorders keys, so that stays a human's
  decision.
- A config the broker does not report is compared with Kafka's default where one is fixed
  (``cleanup.policy = delete``); ``retention.ms`` has no fixed default (it is a broker setting),
  so an unreported value is shown as "broker default".
- The start-up check reads partitions only (metadata), not configs: a client allowed to produce
  may not be allowed to describe configs, and configs do not decide whether a run can work.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code

from config.models import EngineConfig, KafkaConfig
from engine.kafka.security import client_kwargs
from engine.lifecycle import AsyncService

DEFAULT_TIMEOUT_S = 10.0
CREATE_HINT = (
    "run `tradeengine topics create --config <file>` or set kafka.auto_create_topics = true"
)
KAFKA_CONFIG_DEFAULTS: Mapping[str, str] = {"cleanup.policy": "delete"}
"""Topic configs whose Kafka default is fixed (not a broker setting)."""
ORDERED_TOPIC_REASON = "ordering of bars, watermarks and signals depends on it"


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """A topic as the config wants it."""

    name: str
    partitions: int
    replication_factor: int
    configs: Mapping[str, str] = field(default_factory=dict)
    """Topic configs to create it with: ``retention.ms``, ``cleanup.policy``."""


@dataclass(frozen=True, slots=True)
class TopicDescription:
    """A topic as the broker has it (``exists = False``: the rest is empty)."""

    name: str
    exists: bool
    partitions: int | None
    replication_factor: int | None
    configs: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CreateResult:
    """What `TopicAdmin.create` did with one spec; `detail` says how an existing topic differs
    from its spec (empty: it matches) or why creating failed."""

    name: str
    outcome: Literal["created", "exists", "failed"]
    detail: str


class TopicsMissingError(Exception):
    """The topics the config needs are missing or unusable; `problems` has one line each, and
    a last line with how to create them when some are missing."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class KafkaUnreachableError(Exception):
    """No configured bootstrap server answered within the admin's timeout."""


class TopicAdminError(Exception):
    """The broker refused an admin request (other than "topic already exists")."""


def remote_agent_names(config: EngineConfig) -> list[str]:
    """Enabled agents that run in their own process, connected over Kafka."""
    return [agent.name for agent in config.agents if agent.enabled and agent.remote]


def used_topics(config: EngineConfig) -> dict[str, str]:
    """Every Kafka topic the config uses -> why, sorted by name.

    Reasons: ``egress route '<bus pattern>'``, ``ingress route``, ``dead-letter topic`` (only
    when something consumes: ingress routes or remote agents), ``remote agents feed`` and
    ``remote agents output`` (only when an enabled agent has ``remote = true``). A topic with
    several uses lists them all, separated by ``; ``.
    """
    kafka = config.kafka
    uses: dict[str, list[str]] = {}

    def add(topic: str, why: str) -> None:
        reasons = uses.setdefault(topic, [])
        if why not in reasons:
            reasons.append(why)

    for egress in kafka.egress:
        add(egress.topic, f"egress route {egress.bus_pattern!r}")
    for ingress in kafka.ingress:
        add(ingress.topic, "ingress route")
    remote = remote_agent_names(config)
    if remote:
        add(kafka.remote_agents.feed_topic, "remote agents feed")
        add(kafka.remote_agents.agents_topic, "remote agents output")
    if kafka.ingress or remote:
        add(kafka.dead_letter_topic, "dead-letter topic")
    return {topic: "; ".join(reasons) for topic, reasons in sorted(uses.items())}


def topic_specs(config: EngineConfig) -> list[TopicSpec]:
    """The ``kafka.topics`` entries, plus a default spec (1 partition, replication 1, broker
    default configs) for every used topic they do not list; sorted by name."""
    specs: dict[str, TopicSpec] = {}
    for topic in config.kafka.topics:
        configs: dict[str, str] = {"cleanup.policy": topic.cleanup_policy}
        if topic.retention_ms is not None:
            configs["retention.ms"] = str(topic.retention_ms)
        specs[topic.name] = TopicSpec(
            topic.name, topic.partitions, topic.replication_factor, configs
        )
    for name in used_topics(config):
        specs.setdefault(name, TopicSpec(name, 1, 1, {}))
    return [specs[name] for name in sorted(specs)]


def differences(spec: TopicSpec, actual: TopicDescription) -> list[str]:
    """How an existing topic differs from its spec, one phrase each (empty: it matches)."""
    found: list[str] = []
    if actual.partitions != spec.partitions:
        found.append(f"has {actual.partitions} partitions, config says {spec.partitions}")
    if actual.replication_factor != spec.replication_factor:
        found.append(
            f"has replication factor {actual.replication_factor}, "
            f"config says {spec.replication_factor}"
        )
    for key, wanted in sorted(spec.configs.items()):
        value = actual.configs.get(key, KAFKA_CONFIG_DEFAULTS.get(key))
        if value is None:
            found.append(f"{key} is the broker default, config says {wanted}")
        elif value != wanted:
            found.append(f"{key} is {value}, config says {wanted}")
    return found


class TopicAdmin(AsyncService):
    """Creates and describes topics with the engine's connection and security settings."""

    def __init__(self, config: KafkaConfig, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self._config = config
        self._timeout_s = timeout_s
        self._client: Any = None

    async def start(self) -> None:
        """Connect; raises `KafkaUnreachableError` naming the servers if none answers in time
        (and ValueError for a bad ``kafka.ssl_cafile``)."""
        if self._client is not None:
            return
        client = AIOKafkaAdminClient(
            **client_kwargs(self._config), request_timeout_ms=int(self._timeout_s * 1000)
        )
        try:
            await asyncio.wait_for(client.start(), self._timeout_s)
        except (KafkaError, OSError, TimeoutError) as exc:
            with contextlib.suppress(Exception):
                await client.close()
            servers = ", ".join(self._config.bootstrap_servers)
            why = error_text(exc)
            within = f"within {self._timeout_s:g}s"
            raise KafkaUnreachableError(
                f"cannot reach the Kafka broker(s) {servers} {within} ({why})"
            ) from exc
        self._client = client

    async def stop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    async def create(self, specs: Sequence[TopicSpec]) -> list[CreateResult]:
        """Create every spec that does not exist yet; existing topics are left as they are and
        reported with their differences from the spec. Idempotent."""
        if not specs:
            return []
        client = self._require_client()
        new_topics = [
            NewTopic(s.name, s.partitions, s.replication_factor, topic_configs=dict(s.configs))
            for s in specs
        ]
        try:
            response = await client.create_topics(
                new_topics, timeout_ms=int(self._timeout_s * 1000)
            )
        except KafkaError as exc:
            reason = error_text(exc)
            return [CreateResult(s.name, "failed", reason) for s in specs]
        errors: dict[str, tuple[int, str | None]] = {}
        for entry in response.topic_errors:
            # (topic, error_code[, error_message]) in every CreateTopics response version.
            errors[str(entry[0])] = (int(entry[1]), entry[2] if len(entry) > 2 else None)
        existing = [
            s.name for s in specs if _error_class(errors.get(s.name)) is TopicAlreadyExistsError
        ]
        described = await self._describe_for_diff(existing)
        results: list[CreateResult] = []
        for spec in specs:
            code, message = errors.get(spec.name, (-1, "no answer for this topic"))
            if code == 0:
                results.append(CreateResult(spec.name, "created", ""))
            elif spec.name in described:
                actual = described[spec.name]
                detail = (
                    "; ".join(differences(spec, actual))
                    if isinstance(actual, TopicDescription)
                    else actual
                )
                results.append(CreateResult(spec.name, "exists", detail))
            else:
                name = for_code(code).__name__ if code > 0 else "error"
                text = f"{name}: {message}" if message else name
                results.append(CreateResult(spec.name, "failed", text))
        return results

    async def describe(self, names: Sequence[str]) -> list[TopicDescription]:
        """The broker's view of `names` (partitions, replication, configs), in that order.

        Raises `TopicAdminError` if the broker refuses to describe an existing topic's configs.
        """
        found = await self._partitions(names)
        configs = await self._configs([n for n in names if n in found])
        return [
            TopicDescription(name, True, *found[name], configs[name])
            if name in found
            else TopicDescription(name, False, None, None, {})
            for name in names
        ]

    async def ensure(self, config: EngineConfig) -> list[CreateResult]:
        """The start-up check: every used topic exists (created from `topic_specs` when
        ``kafka.auto_create_topics``), and the remote agents' topics have one partition.

        Returns what creating did (empty without auto-create); raises `TopicsMissingError`.
        """
        used = used_topics(config)
        results: list[CreateResult] = []
        if config.kafka.auto_create_topics:
            results = await self.create(topic_specs(config))
        failed = {r.name: r.detail for r in results if r.outcome == "failed"}
        found = await self._partitions(list(used))
        problems: list[str] = []
        missing = [name for name in used if name not in found]
        for name in missing:
            if name in failed:
                problems.append(
                    f"kafka topic {name!r} (needed by: {used[name]}) could not be created: "
                    f"{failed[name]}"
                )
            else:
                problems.append(f"kafka topic {name!r} does not exist (needed by: {used[name]})")
        if remote_agent_names(config):
            remote = config.kafka.remote_agents
            for name in (remote.feed_topic, remote.agents_topic):
                partitions = found[name][0] if name in found else None
                if partitions is not None and partitions != 1:
                    problems.append(
                        f"kafka topic {name!r} (needed by: {used[name]}) has {partitions} "
                        f"partitions; it must have exactly 1 ({ORDERED_TOPIC_REASON})"
                    )
        if missing and not config.kafka.auto_create_topics:
            problems.append(f"to create the missing topics: {CREATE_HINT}")
        if problems:
            raise TopicsMissingError(problems)
        return results

    # ------------------------------------------------------------------------------ helpers

    def _require_client(self) -> Any:
        if self._client is None:
            raise RuntimeError("TopicAdmin is not started")
        return self._client

    async def _partitions(self, names: Sequence[str]) -> dict[str, tuple[int, int]]:
        """name -> (partitions, replication factor) for those of `names` that exist.

        Asks for the metadata of all topics: naming a missing one would create it (see the
        module doc).
        """
        client = self._require_client()
        wanted = set(names)
        found: dict[str, tuple[int, int]] = {}
        for topic in await client.describe_topics():
            name = str(topic["topic"])
            if name not in wanted:
                continue
            partitions = topic.get("partitions") or []
            replication = max((len(p.get("replicas") or []) for p in partitions), default=0)
            found[name] = (len(partitions), replication)
        return found

    async def _configs(self, names: Sequence[str]) -> dict[str, dict[str, str]]:
        if not names:
            return {}
        client = self._require_client()
        resources = [ConfigResource(ConfigResourceType.TOPIC, name) for name in names]
        configs: dict[str, dict[str, str]] = {name: {} for name in names}
        for response in await client.describe_configs(resources):
            # (error_code, error_message, resource_type, resource_name, config_entries), each
            # entry starting (name, value, ...), in every DescribeConfigs response version.
            for code, message, _type, name, entries in (r[:5] for r in response.resources):
                if code:
                    raise TopicAdminError(
                        f"cannot read the configs of topic {name!r}: "
                        f"{for_code(code).__name__}: {message}"
                    )
                configs[str(name)] = {
                    str(entry[0]): str(entry[1]) for entry in entries if entry[1] is not None
                }
        return configs

    async def _describe_for_diff(self, names: Sequence[str]) -> dict[str, TopicDescription | str]:
        """Descriptions of existing topics for `create`'s report; the error text instead when
        the broker will not describe them (creating still succeeded in its own terms)."""
        if not names:
            return {}
        try:
            return {d.name: d for d in await self.describe(names)}
        except (KafkaError, TopicAdminError) as exc:
            return dict.fromkeys(names, f"cannot compare with the config: {exc}")


def error_text(exc: BaseException) -> str:
    """``Class: message`` once (aiokafka's messages often start with their class name)."""
    name, text = type(exc).__name__, str(exc)
    if not text:
        return name
    return text if text.startswith(name) else f"{name}: {text}"


def _error_class(error: tuple[int, str | None] | None) -> type[Exception] | None:
    if error is None or error[0] <= 0:
        return None
    cls: type[Exception] = for_code(error[0])
    return cls
