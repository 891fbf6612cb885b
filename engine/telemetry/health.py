"""The engine's health model: one state per component, rolled up for /healthz and /readyz.

Components (sources, agents, stages, the pipeline, risk, execution) report their own state here
when it changes; the registry derives two answers for an orchestrator:

- liveness ("should I restart the process?"): fails only when a *critical* component is FAULTED.
  A quarantined agent or a degraded feed makes the engine DEGRADED, which is worth a page but
  not a restart: restarting would lose in-memory state and would not fix the agent.
- readiness ("should I send traffic / count this instance as up?"): requires every component to
  have left STARTING, none to be STOPPED, no critical fault, and at least one watermark to have
  gone through the pipeline. The last condition exists because "all components RUNNING" only
  says the tasks started; a watermark reaching the end proves data actually flows.

Trade-offs:

- State is pushed by components (`set`), not pulled by probes, so an HTTP probe is a cheap read
  and never calls into a component. The price is that a component that hangs without reporting
  stays RUNNING here; the supervisor's watchdog is the one that notices hangs and reports them.
- `set` logs every change and calls listeners synchronously. It is meant for state *changes*
  (rare), never for the per-message hot path; `watermark_processed` is the only method a hot
  path may call repeatedly and it returns after one attribute test once set.
- Single event loop, no locks: every caller lives on the engine's loop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from engine.telemetry.logging import Logger


class ComponentState(StrEnum):
    """Lifecycle state of one component, as reported by the component itself."""

    STARTING = "STARTING"
    RUNNING = "RUNNING"
    DEGRADED = "DEGRADED"
    FAULTED = "FAULTED"
    STOPPED = "STOPPED"


@dataclass(frozen=True, slots=True)
class ComponentHealth:
    """Snapshot of one component's health (copies, so callers cannot mutate the registry)."""

    name: str
    state: ComponentState
    reason: str
    critical: bool
    changes: int


HealthListener = Callable[[str, ComponentState, ComponentState, str], None]
"""Called as `callback(name, previous, new, reason)` after each state change."""


class _Entry:
    # Mutable internal record; `ComponentHealth` snapshots are built from it on read, so `set`
    # does not allocate a new frozen object on every change.
    __slots__ = ("changes", "critical", "reason", "state")

    def __init__(self, *, critical: bool, state: ComponentState, reason: str) -> None:
        self.critical = critical
        self.state = state
        self.reason = reason
        self.changes = 0


def _describe(name: str, entry: _Entry) -> str:
    # "agent momentum: quarantined after 5 failures"; the state stands in for an empty reason so
    # the message never ends in a bare colon.
    return f"{name}: {entry.reason or entry.state.value}"


class HealthRegistry:
    """Component states, their roll-up, and the liveness/readiness answers served over HTTP."""

    def __init__(self, log: Logger, *, redact: Callable[[str], str] | None = None) -> None:
        """`redact` masks secrets in reasons (they are served over HTTP, not only logged)."""
        self._log = log
        self._redact = redact
        # dicts keep insertion order, which is the registration order `components()` promises.
        self._entries: dict[str, _Entry] = {}
        self._listeners: list[HealthListener] = []
        self._first_watermark = False

    # ------------------------------------------------------------------ reporting

    def register(
        self,
        name: str,
        *,
        critical: bool,
        state: ComponentState = ComponentState.STARTING,
        reason: str = "",
    ) -> None:
        """Declare a component. Critical ones fault the whole engine when they fault."""
        if name in self._entries:
            raise ValueError(f"health: duplicate component name {name!r}")
        if self._redact is not None:
            reason = self._redact(reason)
        self._entries[name] = _Entry(critical=critical, state=state, reason=reason)

    def set(self, name: str, state: ComponentState, reason: str = "") -> None:
        """Record a component's new state; logs and notifies listeners only on an actual change."""
        entry = self._entries.get(name)
        if entry is None:
            known = ", ".join(self._entries) or "none"
            raise KeyError(f"health: unknown component {name!r} (registered: {known})")
        if self._redact is not None:
            # Reasons are often exception texts, which can echo a credential.
            reason = self._redact(reason)
        if entry.state is state and entry.reason == reason:
            # Components may re-report their state idempotently; that is not a change and must
            # not flood the log or inflate the change counter.
            return
        previous = entry.state
        entry.state = state
        entry.reason = reason
        entry.changes += 1
        if state is ComponentState.FAULTED:
            emit = self._log.error
        elif state is ComponentState.DEGRADED:
            emit = self._log.warning
        else:
            emit = self._log.info
        emit(
            "component state changed",
            component=name,
            state=state.value,
            previous=previous.value,
            reason=reason,
        )
        for listener in self._listeners:
            try:
                listener(name, previous, state, reason)
            except Exception as exc:
                # `set` is usually called from a component's own error handling; a broken
                # listener (e.g. a metrics gauge) must not turn that into a second failure.
                self._log.error(
                    "health listener raised", component=name, state=state.value, exc_info=exc
                )

    def add_listener(self, callback: HealthListener) -> None:
        """Call `callback(name, previous, new, reason)` after every future state change."""
        self._listeners.append(callback)

    def watermark_processed(self) -> None:
        """Record that a watermark went through the whole pipeline (only the first one matters)."""
        if self._first_watermark:
            return
        self._first_watermark = True
        self._log.info("first watermark processed")

    # ------------------------------------------------------------------ reading

    @property
    def first_watermark_seen(self) -> bool:
        return self._first_watermark

    def components(self) -> list[ComponentHealth]:
        """Snapshots of every component, in registration order."""
        return [
            ComponentHealth(
                name=name,
                state=e.state,
                reason=e.reason,
                critical=e.critical,
                changes=e.changes,
            )
            for name, e in self._entries.items()
        ]

    def overall(self) -> tuple[ComponentState, str]:
        """The engine's state and a reason naming the components responsible for it."""
        critical_faults: list[str] = []
        degraded: list[str] = []
        starting: list[str] = []
        all_stopped = True
        for name, e in self._entries.items():
            if e.state is ComponentState.FAULTED:
                (critical_faults if e.critical else degraded).append(_describe(name, e))
            elif e.state is ComponentState.DEGRADED:
                degraded.append(_describe(name, e))
            elif e.state is ComponentState.STARTING:
                starting.append(_describe(name, e))
            if e.state is not ComponentState.STOPPED:
                all_stopped = False
        if critical_faults:
            return ComponentState.FAULTED, "; ".join(critical_faults)
        if degraded:
            return ComponentState.DEGRADED, "; ".join(degraded)
        if starting:
            return ComponentState.STARTING, "; ".join(starting)
        if not self._entries:
            # Nothing registered yet means the composition root has not built the engine; calling
            # that STOPPED (vacuously "all stopped") or RUNNING would both mislead a probe.
            return ComponentState.STARTING, "no components registered"
        if all_stopped:
            return ComponentState.STOPPED, "all components stopped"
        return ComponentState.RUNNING, ""

    def is_ready(self) -> tuple[bool, list[str]]:
        """Whether the engine should count as up, and if not, every reason why not."""
        reasons: list[str] = []
        if not self._first_watermark:
            reasons.append("no watermark processed yet")
        if not self._entries:
            reasons.append("no components registered")
        for name, e in self._entries.items():
            blocking = e.state in (ComponentState.STARTING, ComponentState.STOPPED) or (
                e.critical and e.state is ComponentState.FAULTED
            )
            if blocking:
                reasons.append(f"{name}: {e.state.value}" + (f" ({e.reason})" if e.reason else ""))
        return not reasons, reasons

    # ------------------------------------------------------------------ HTTP answers

    def liveness(self) -> tuple[int, dict[str, Any]]:
        """(HTTP status, JSON body) for /healthz: 503 only when a critical component faulted."""
        state, reason = self.overall()
        status = 503 if state is ComponentState.FAULTED else 200
        return status, self._body(state, reason)

    def readiness(self) -> tuple[int, dict[str, Any]]:
        """(HTTP status, JSON body) for /readyz: 200 only when `is_ready()`."""
        state, reason = self.overall()
        ready, not_ready = self.is_ready()
        body = self._body(state, reason)
        body["ready"] = ready
        body["not_ready"] = not_ready
        body["first_watermark"] = self._first_watermark
        return (200 if ready else 503), body

    def _body(self, state: ComponentState, reason: str) -> dict[str, Any]:
        return {
            "status": state.value,
            "reason": reason,
            "components": {
                name: {"state": e.state.value, "reason": e.reason, "critical": e.critical}
                for name, e in self._entries.items()
            },
        }
