"""The feature store client every agent and stage shares, and its in-memory backend.

Why this module exists: the design card has the stages share one async feature-store client
(in-memory by default, Redis in production). This is that client's contract; `MemoryFeatureStore`
is the embedded default and the reference the Redis backend is tested against (one contract
suite runs on both).

Trade-offs made:
- Writes are *write-behind*: `put`/`put_many` validate and encode in the caller, make the values
  visible to this process at once (the memory backend, or the Redis backend's near cache), and
  queue them for the backend; `flush()` waits until everything queued is stored. Agents write an
  indicator per event and must not wait a network round trip for each; a stage that needs its
  own writes back from the server calls `flush()` first (the pipeline does, once per step).
  A backend that holds no bytes (the memory one, `keeps_values`) is handed each value as
  decoding its bytes would give it instead, so neither its writes nor its reads touch the codec.
- The write queue is bounded. When the backend is unreachable it holds writes and retries with
  back-off; when it is full the oldest queued write is dropped, counted and logged.
- Keys are ``<namespace>:fs:<set>:v<version>:<entity>``, one hash per entity with one field per
  feature, so `get_many` for K entities is one pipelined round trip. TTLs apply to an entity's
  hash as a whole (Redis < 7.4 has no per-field expiry); the memory backend does the same.
- Reads return only the features that exist: a missing feature is absent from the row, a value
  that cannot be decoded is reported, counted and treated as missing, never raised into a stage.
"""

from __future__ import annotations

import functools
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, NamedTuple

import numpy as np

from engine.features.codec import (
    CorruptValueError,
    RowDecoder,
    decode,
    encode,
    encode_finite_float,
    encode_kept,
    encode_str,
    kept_value,
    stored_ts_us,
    ts_of_us,
    ts_to_us,
    us_to_ts,
)
from engine.features.schema import (
    FeatureError,
    FeatureField,
    FeatureSet,
    FeatureValue,
    check_entity,
)
from engine.lifecycle import AsyncService
from engine.telemetry.logging import Logger, get_logger

Row = dict[str, FeatureValue]


class DecodedRow(dict[str, FeatureValue]):
    """A row a backend's `_read` already decoded: only the requested features that exist, in
    the order asked for, in a dict the caller may keep. Returned to the caller as it is."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class ReadPlan:
    """What reading (set, names) needs, worked out once: the checked names, their fields, and
    a whole-row decoder when they are all scalars (see `read_plan`)."""

    fs: FeatureSet
    names: tuple[str, ...]
    specs: tuple[FeatureField, ...]
    row_decoder: RowDecoder | None
    every_field: bool
    """`names` covers every field of the set (a backend may read the whole row)."""


_PLANS_ALL: dict[int, ReadPlan] = {}
_PLANS: dict[tuple[int, tuple[str, ...]], ReadPlan] = {}
_PLANS_MAX = 1024
_last_plan: ReadPlan | None = None


def read_plan(fs: FeatureSet, names: Sequence[str] | None) -> ReadPlan:
    """The plan of reading `names` (None = every field) of `fs`; `FeatureError` for an unknown
    name. Cached: sets are immutable and declared once, so a read does not re-check its
    names, rebuild the all-fields tuple or look fields up again, and the tuple of names it
    hands on is the same object from one read to the next. The cache holds the sets it plans
    for (so their ids are not reused while cached) and is bounded."""
    global _last_plan
    if names is None:
        plan = _PLANS_ALL.get(id(fs))
        if plan is None or plan.fs is not fs:
            plan = _new_plan(fs, fs.names())
            if len(_PLANS_ALL) >= _PLANS_MAX:
                _PLANS_ALL.clear()
            _PLANS_ALL[id(fs)] = plan
        _last_plan = plan
        return plan
    last = _last_plan
    if last is not None and names is last.names and last.fs is fs:
        return last
    key = (id(fs), tuple(names))
    plan = _PLANS.get(key)
    if plan is None or plan.fs is not fs:
        plan = _new_plan(fs, fs.resolve(names))
    _last_plan = plan
    return plan


def _new_plan(fs: FeatureSet, names: tuple[str, ...]) -> ReadPlan:
    specs = tuple(fs.field(name) for name in names)
    every = len(set(names)) == len(fs.fields)
    plan = ReadPlan(fs, names, specs, RowDecoder.for_specs(specs), every)
    if len(_PLANS) >= _PLANS_MAX:
        _PLANS.clear()
    _PLANS[(id(fs), names)] = plan
    return plan


_KNOWN_ENTITIES: set[str] = set()
_KNOWN_ENTITIES_MAX = 65_536


def _check_entities(fs: FeatureSet, entities: Sequence[str]) -> None:
    """`check_entity` of each, with one set test for entities already seen valid."""
    try:
        if _KNOWN_ENTITIES.issuperset(entities):
            return
    except TypeError:  # an unhashable "entity": check_entity names it
        pass
    for entity in entities:
        check_entity(fs, entity)
        if len(_KNOWN_ENTITIES) >= _KNOWN_ENTITIES_MAX:
            _KNOWN_ENTITIES.clear()
        _KNOWN_ENTITIES.add(entity)


EncodedRow = dict[str, bytes]
StateListener = Callable[[str, str], None]
"""Called with (state, reason) when the store's state changes: "RUNNING" or "DEGRADED"."""


@functools.lru_cache(maxsize=4096)
def _ts_us(ts: datetime) -> int:
    # Every agent writes with its event's timestamp: a step's writes share a handful of them.
    return ts_to_us(ts)


def entity_key(namespace: str, fs: FeatureSet, entity: str) -> str:
    return f"{namespace}:fs:{fs.name}:v{fs.version}:{entity}"


def set_prefix(namespace: str, fs: FeatureSet) -> str:
    return f"{namespace}:fs:{fs.name}:v{fs.version}:"


@dataclass(slots=True)
class FeatureStoreStats:
    """Counters of one client; exported as metrics."""

    reads: int = 0
    """get/get_many calls."""
    entities_read: int = 0
    hits: int = 0
    """Entities served from the near cache (Redis backend)."""
    misses: int = 0
    writes: int = 0
    """Entities written (queued)."""
    flushed: int = 0
    """Entities stored by the backend."""
    invalidations: int = 0
    corrupt: int = 0
    errors: int = 0
    dropped_writes: int = 0
    """Queued writes dropped because the write buffer overflowed."""
    expired_in_buffer: int = 0
    """Queued writes whose TTL ran out before the backend was reachable (not stored)."""


@dataclass(frozen=True, slots=True)
class SetInfo:
    """What `tradeengine features ls|describe` shows about one registered feature set version."""

    name: str
    version: int
    declaration: dict[str, Any]
    entities: int
    bytes: int
    newest_ts: datetime | None
    """Latest event time any stored value was computed for (None = no values)."""
    active: bool
    """The version readers that ask for "the active one" get (see `promote`)."""


class UnknownFeatureSetError(LookupError):
    """A feature set version that was never registered in this store."""


class PendingWrite(NamedTuple):
    """One entity's encoded write, as queued for a backend. A named tuple rather than a frozen
    dataclass: writers make one per entity per event, and a tuple is several times cheaper to
    build (`_new_tuple` below skips even the named tuple's Python-level `__new__`)."""

    key: str
    fields: EncodedRow
    ttl_ms: int | None
    queued_at: float = 0.0
    """`time.monotonic()` when the write was made: a TTL counts from then, not from when a
    backend that was away finally stores it."""


KeptRow = dict[str, FeatureValue]
"""One entity's values as a backend that keeps them decoded stores them (see `kept_value`)."""

# Tuple construction without the named tuple's Python-level __new__ (same object, cheaper).
_new_tuple = tuple.__new__


_EPOCH_UTC = datetime(1970, 1, 1, tzinfo=UTC)


def _kept_stamp(ts_us: int) -> datetime:
    """The timestamp of kept values: what decoding their bytes would give. An event time that
    is outside datetime's range once in UTC (e.g. 0001-01-01T00:00+05:00) cannot be kept, so
    its write is refused here, rather than stored and later read back as corrupt."""
    try:
        return ts_of_us(ts_us)
    except CorruptValueError:
        raise FeatureError(f"event time out of range in UTC ({ts_us} us since 1970)") from None


class FeatureStore(AsyncService, ABC):
    """The async client (see the module docstring)."""

    backend: str = "abstract"
    keeps_values: ClassVar[bool] = False
    """The backend keeps values decoded, not as bytes (the memory backend): `put`/`put_many`
    then hand `_write_kept` each value as decoding its bytes would give it (`kept_value`),
    never encoding it, and `_read` returns the values of a row written under the reader's own
    declaration as a `DecodedRow` (nothing decoded); anything else goes through the decoder."""

    def __init__(
        self,
        *,
        namespace: str,
        log: Logger | None = None,
        max_buffered_writes: int = 100_000,
        on_state: StateListener | None = None,
        default_ttl_s: float | None = None,
    ) -> None:
        self.namespace = namespace
        self.default_ttl_s = default_ttl_s
        """TTL of sets that declare none (``feature_store.default_ttl_s``)."""
        self.log = log or get_logger("engine").bind(subsystem="features")
        self.stats = FeatureStoreStats()
        self.max_buffered_writes = max_buffered_writes
        self._on_state = on_state
        self.state = "RUNNING"
        self.state_reason = ""
        self.read_latency: Callable[[float], None] | None = None
        """Called with the seconds each get/get_many took (metrics)."""
        self.write_latency: Callable[[float], None] | None = None
        """Called with the seconds each batch took to reach the backend (metrics)."""
        self._keys: dict[tuple[int, str], tuple[FeatureSet, str]] = {}
        self.write_observer: Callable[[FeatureSet, str, Mapping[str, Any]], None] | None = None
        """Called with (set, entity, validated values) of every row written (drift detection
        samples values here)."""

    # ------------------------------------------------------------------------- public API

    async def get(self, fs: FeatureSet, entity: str, names: Sequence[str] | None = None) -> Row:
        """One entity's features (absent ones are left out of the row)."""
        plan = read_plan(fs, names)
        if entity.__class__ is not str or entity not in _KNOWN_ENTITIES:
            _check_entities(fs, (entity,))
        latency = self.read_latency
        started = time.perf_counter() if latency is not None else 0.0
        raw = await self._read(fs, [entity], plan.names)
        row = self._decode_row(fs, entity, raw.get(entity), plan.names)
        stats = self.stats
        stats.reads += 1
        stats.entities_read += 1
        if latency is not None:
            latency(time.perf_counter() - started)
        return row

    async def get_many(
        self, fs: FeatureSet, entities: Sequence[str], names: Sequence[str] | None = None
    ) -> dict[str, Row]:
        """Several entities' features in one round trip; every entity has a (maybe empty) row."""
        plan = read_plan(fs, names)
        wanted = plan.names
        _check_entities(fs, entities)
        latency = self.read_latency
        started = time.perf_counter() if latency is not None else 0.0
        raw = await self._read(fs, list(entities), wanted)
        decode_row = self._decode_row
        rows: dict[str, Row] = {}
        for entity in entities:
            found = raw.get(entity)
            # A backend's ready row is handed on as it is (what `_decode_row` would do).
            rows[entity] = (
                found if type(found) is DecodedRow else decode_row(fs, entity, found, wanted)
            )
        stats = self.stats
        stats.reads += 1
        stats.entities_read += len(entities)
        if latency is not None:
            latency(time.perf_counter() - started)
        return rows

    async def put(
        self,
        fs: FeatureSet,
        entity: str,
        values: Mapping[str, Any],
        ts: datetime,
        ttl_s: float | None = None,
    ) -> None:
        """Write one entity's features computed for event time `ts` (see write-behind above);
        `ttl_s` overrides the set's default TTL."""
        # The per-event path of agents: written out rather than delegated to put_many.
        checked = fs.validate(entity, values)
        if self.write_observer is not None:
            self.write_observer(fs, entity, checked)
        ts_us = _ts_us(ts)
        field = fs.field
        kept: KeptRow | None = None
        encoded: EncodedRow | None = None
        if self.keeps_values:
            stamp = _kept_stamp(ts_us)
            kept = {name: kept_value(field(name), v, stamp) for name, v in checked.items()}
        else:
            encoded = {name: encode(field(name), v, ts_us) for name, v in checked.items()}
        self.stats.writes += 1
        keys = self._keys
        # Keyed by identity (a FeatureSet's dataclass hash walks all its fields); the entry
        # keeps its set, so a recycled id can never hand out another set's key.
        known = keys.get((id(fs), entity))
        if known is None or known[0] is not fs:
            known = keys[(id(fs), entity)] = (fs, entity_key(self.namespace, fs, entity))
        key = known[1]
        ttl_ms = self._ttl_ms(fs, ttl_s)
        if kept is not None:
            await self._write_kept(fs, [(key, kept)], ttl_ms)
            return
        assert encoded is not None
        queued_at = time.monotonic() if ttl_ms is not None else 0.0
        await self._write([_new_tuple(PendingWrite, (key, encoded, ttl_ms, queued_at))])

    async def put_many(
        self,
        fs: FeatureSet,
        rows: Mapping[str, Mapping[str, Any]],
        ts: datetime,
        ttl_s: float | None = None,
    ) -> None:
        """Write several entities' features computed for event time `ts`."""
        ts_us = ts_to_us(ts)
        ttl_ms = self._ttl_ms(fs, ttl_s)
        queued_at = time.monotonic() if ttl_ms is not None else 0.0
        keep = self.keeps_values
        stamp = _kept_stamp(ts_us) if keep else _EPOCH_UTC  # the latter unused: bytes carry ts
        writes: list[PendingWrite] = []
        kept_rows: list[tuple[str, KeptRow]] = []
        observer = self.write_observer
        field = fs.field
        keys = self._keys
        fs_id = id(fs)
        fast = fs.fast_fields
        inf = math.inf
        pack_float = encode_finite_float
        new_tuple = _new_tuple
        for entity, values in rows.items():
            # Bytes, or values as `kept_value` makes them (a backend that `keeps_values`).
            fields: dict[str, Any] | None = None
            if fast is not None and values:
                # The common case of indicator and regime rows: finite floats and short ASCII
                # strings of known fields, stored without the validating path's per-value
                # calls. Anything else (an unknown name, NaN, a non-float, a string that might
                # exceed its limit or not encode) takes the validating path, which raises
                # exactly what it always did.
                fields = {}
                for name, v in values.items():
                    limit = fast.get(name)
                    if limit is None:
                        fields = None
                        break
                    if limit < 0:
                        if type(v) is not float or not -inf < v < inf:
                            fields = None
                            break
                    elif type(v) is not str or len(v) > limit or not v.isascii():
                        fields = None
                        break
                    if keep:
                        fields[name] = new_tuple(FeatureValue, (v, stamp, False))
                    elif limit < 0:
                        fields[name] = pack_float(v, ts_us)
                    else:
                        fields[name] = encode_str(v, ts_us)
            checked: Mapping[str, Any]
            known = keys.get((fs_id, entity))  # see `put` for why keyed by identity
            if fields is None:
                checked = fs.validate(entity, values)
                if keep:
                    # A validated float is kept as it is (`kept_value` would do just that).
                    fields = {
                        n: new_tuple(FeatureValue, (v, stamp, False))
                        if type(v) is float
                        else kept_value(field(n), v, stamp)
                        for n, v in checked.items()
                    }
                else:
                    fields = {name: encode(field(name), v, ts_us) for name, v in checked.items()}
            else:
                if known is None:  # an entity with a key was checked when the key was made
                    check_entity(fs, entity)
                checked = values
            if observer is not None:
                observer(fs, entity, checked)
            if known is None or known[0] is not fs:
                known = keys[(fs_id, entity)] = (fs, entity_key(self.namespace, fs, entity))
            if keep:
                kept_rows.append((known[1], fields))
            else:
                writes.append(new_tuple(PendingWrite, (known[1], fields, ttl_ms, queued_at)))
        if keep:
            self.stats.writes += len(kept_rows)
            await self._write_kept(fs, kept_rows, ttl_ms)
        else:
            self.stats.writes += len(writes)
            await self._write(writes)

    def _ttl_ms(self, fs: FeatureSet, ttl_s: float | None) -> int | None:
        ttl = ttl_s if ttl_s is not None else fs.default_ttl_s
        if ttl is None:
            ttl = self.default_ttl_s
        if ttl is None:
            return None
        if not ttl > 0:
            raise ValueError(f"feature set {fs.ref}: ttl_s must be > 0, got {ttl}")
        return max(1, round(ttl * 1000))

    @property
    def buffered_writes(self) -> int:
        """Writes queued and not yet stored by the backend."""
        return 0

    @abstractmethod
    async def flush(self, timeout_s: float | None = None) -> None:
        """Wait until every write queued so far is stored by the backend; `TimeoutError` after
        `timeout_s` (None = wait as long as it takes)."""

    @abstractmethod
    async def register(self, fs: FeatureSet) -> None:
        """Record a feature set's declaration beside its data (for `tradeengine features`).
        The first version registered under a name becomes its active version."""

    @abstractmethod
    async def list_sets(self) -> list[SetInfo]:
        """Every registered (name, version), sorted, with sizes and ages."""

    @abstractmethod
    async def promote(self, name: str, version: int) -> None:
        """Make `version` the active one of `name`; `UnknownFeatureSetError` if unregistered."""

    @abstractmethod
    async def active_version(self, name: str) -> int | None:
        """The active version of `name` (None if no version is registered)."""

    # ------------------------------------------------------------------------ for backends

    @abstractmethod
    async def _read(
        self, fs: FeatureSet, entities: list[str], names: tuple[str, ...]
    ) -> dict[str, Mapping[str, bytes | FeatureValue] | None]:
        """Raw rows by entity: encoded bytes (decoded here), already decoded values, or a whole
        `DecodedRow` (handed to the caller as it is)."""

    @abstractmethod
    async def _write(self, writes: list[PendingWrite]) -> None:
        """Apply or queue encoded writes."""

    async def _write_kept(
        self, fs: FeatureSet, rows: list[tuple[str, KeptRow]], ttl_ms: int | None
    ) -> None:
        """Apply writes of (key, values) of `fs` for a backend that `keeps_values`; each row's
        dict is the backend's to keep."""
        raise NotImplementedError(f"{type(self).__name__} does not keep values decoded")

    def _decode_row(
        self,
        fs: FeatureSet,
        entity: str,
        raw: Mapping[str, bytes | FeatureValue] | None,
        names: tuple[str, ...],
    ) -> Row:
        """The row of `names` in `raw` (stored bytes, or values a backend already decoded); a
        value that does not decode is reported, counted and left out."""
        if not raw:
            return {}
        if type(raw) is DecodedRow:
            return raw
        plan = read_plan(fs, names)
        datas = list(map(raw.get, names))
        if plan.row_decoder is not None:
            values = plan.row_decoder.decode(datas)
            if values is not None:
                return dict(zip(names, values, strict=False))  # lengths checked
        row: Row = {}
        for name, spec, data in zip(names, plan.specs, datas, strict=True):
            if data is None:
                continue
            if isinstance(data, FeatureValue):
                row[name] = data
                continue
            try:
                row[name] = decode(spec, data)
            except CorruptValueError as exc:
                self._report_corrupt(fs, entity, name, exc)
        return row

    def _report_corrupt(
        self, fs: FeatureSet, entity: str, name: str, exc: CorruptValueError
    ) -> None:
        """A stored value did not decode: count and log it; the caller treats it as missing."""
        self.stats.corrupt += 1
        self.log.warning(
            "corrupt feature value treated as missing",
            feature_set=fs.ref,
            entity=entity,
            field=name,
            error=str(exc),
        )

    def _set_state(self, state: str, reason: str) -> None:
        if state == self.state and reason == self.state_reason:
            return
        self.state, self.state_reason = state, reason
        if state == "DEGRADED":
            self.log.warning("feature store degraded", backend=self.backend, reason=reason)
        else:
            self.log.info("feature store running", backend=self.backend, reason=reason)
        if self._on_state is not None:
            self._on_state(state, reason)


def _for_reader(value: FeatureValue) -> FeatureValue:
    """A kept value as one read hands it out: an array as its own (read-only) view, as decoding
    gave, so no reader can reshape the array another reader, or the store, holds."""
    array = value.value
    if isinstance(array, np.ndarray):
        return _new_tuple(FeatureValue, (array.view(), value.ts, value.stale))
    return value


class MemoryFeatureStore(FeatureStore):
    """The embedded backend: a dict of hashes in this process.

    Values are kept decoded (`keeps_values`): a write stores each value exactly as decoding the
    bytes Redis would hold gives it back (`codec.kept_value`: same type, bits and timestamp; an
    array is a read-only view of its own immutable copy), and a read hands out a new row of
    those values without decoding anything. So both backends return equal values, and the
    replay's hot path (every agent writes each step, the pipeline writes and reads arrays back)
    neither encodes nor decodes. Bytes are made only where they matter: `list_sets` measures
    them, and a read under another declaration of the set version gets the values' bytes
    decoded under its own, so what it does not accept is reported and missing, as on Redis.
    Bytes found in a hash (put there behind the store's back, as the contract tests do to
    corrupt a value) are decoded on every read by the shared code, so a corrupt value is
    reported as on Redis. Expiry uses the monotonic clock, like Redis' own: TTLs are
    operational, never event time.
    """

    backend = "memory"
    keeps_values = True

    def __init__(
        self,
        *,
        namespace: str,
        log: Logger | None = None,
        clock: Callable[[], float] = time.monotonic,
        **kwargs: Any,
    ) -> None:
        super().__init__(namespace=namespace, log=log, **kwargs)
        self._data: dict[str, dict[str, FeatureValue | bytes]] = {}
        self._expires: dict[str, float] = {}
        self._meta: dict[str, dict[str, Any]] = {}
        self._active: dict[str, int] = {}
        self._clock = clock
        self._prefixes: dict[int, tuple[FeatureSet, str]] = {}
        self._writers: dict[str, FeatureSet | None] = {}
        """Per key, the declaration its kept values were validated under (None: more than one
        that differ). A read under another declaration must not trust them (see `_read`)."""

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def flush(self, timeout_s: float | None = None) -> None:
        return None

    async def register(self, fs: FeatureSet) -> None:
        self._meta[fs.ref] = fs.describe()
        self._active.setdefault(fs.name, fs.version)

    async def list_sets(self) -> list[SetInfo]:
        out: list[SetInfo] = []
        for declaration in self._meta.values():
            name, version = str(declaration["name"]), int(declaration["version"])
            prefix = f"{self.namespace}:fs:{name}:v{version}:"
            keys = [k for k in self.keys() if k.startswith(prefix)]
            newest: int | None = None
            size = 0
            for key in keys:
                for value in self._data[key].values():
                    data = encode_kept(value) if isinstance(value, FeatureValue) else value
                    size += len(data)
                    ts_us = stored_ts_us(data)
                    if ts_us is not None:
                        newest = ts_us if newest is None else max(newest, ts_us)
            out.append(
                SetInfo(
                    name=name,
                    version=version,
                    declaration=declaration,
                    entities=len(keys),
                    bytes=size,
                    newest_ts=us_to_ts(newest) if newest is not None else None,
                    active=self._active.get(name) == version,
                )
            )
        return sorted(out, key=lambda i: (i.name, i.version))

    async def promote(self, name: str, version: int) -> None:
        if f"{name}:v{version}" not in self._meta:
            raise UnknownFeatureSetError(f"feature set {name}:v{version} is not registered")
        self._active[name] = version

    async def active_version(self, name: str) -> int | None:
        return self._active.get(name)

    def _live(self, key: str) -> dict[str, FeatureValue | bytes] | None:
        if not self._expires:  # no TTL anywhere: the common case of a replay
            return self._data.get(key)
        deadline = self._expires.get(key)
        if deadline is not None and self._clock() >= deadline:
            self._data.pop(key, None)
            self._expires.pop(key, None)
            self._writers.pop(key, None)
            return None
        return self._data.get(key)

    async def _read(
        self, fs: FeatureSet, entities: list[str], names: tuple[str, ...]
    ) -> dict[str, Mapping[str, bytes | FeatureValue] | None]:
        known = self._prefixes.get(id(fs))  # keyed by identity, like `FeatureStore._keys`
        if known is None or known[0] is not fs:
            known = self._prefixes[id(fs)] = (fs, set_prefix(self.namespace, fs))
        prefix = known[1]
        live = self._live if self._expires else self._data.get
        writers = self._writers
        out: dict[str, Mapping[str, bytes | FeatureValue] | None] = {}
        for entity in entities:
            key = prefix + entity
            stored = live(key)
            if not stored:
                out[entity] = None
                continue
            writer = writers.get(key)
            if writer is not fs and (writer is None or writer != fs):
                # Kept under another declaration of this set version (or bytes put there
                # behind the store's back): their bytes, decoded under the reader's, so a
                # value it does not accept is reported and missing, as on Redis.
                out[entity] = {
                    name: encode_kept(value) if isinstance(value, FeatureValue) else value
                    for name, value in stored.items()
                }
                continue
            # A new dict each read: the caller may keep or change it, the store's stays as is.
            row = DecodedRow()
            for name in names:
                value = stored.get(name)
                if value is not None:
                    if value.__class__ is not FeatureValue:  # bytes: decoded by the caller
                        break
                    row[name] = _for_reader(value)
            else:
                out[entity] = row
                continue
            # Bytes among the values (written behind the store's back): the shared code decodes
            # them, and the kept values still go out as they would alone.
            out[entity] = {
                n: _for_reader(v) if v.__class__ is FeatureValue else v for n, v in stored.items()
            }
        return out

    async def _write(self, writes: list[PendingWrite]) -> None:
        # Encoded writes (`put`/`put_many` send kept values, see `_write_kept`): stored as
        # bytes, which reads decode.
        started = time.perf_counter()
        now = self._clock()
        for w in writes:
            current = self._live(w.key)
            if current is None:
                current = self._data[w.key] = {}
            current.update(w.fields)
            if w.ttl_ms is not None:
                self._expires[w.key] = now + w.ttl_ms / 1000
        self.stats.flushed += len(writes)
        if self.write_latency is not None:
            self.write_latency(time.perf_counter() - started)

    async def _write_kept(
        self, fs: FeatureSet, rows: list[tuple[str, KeptRow]], ttl_ms: int | None
    ) -> None:
        started = time.perf_counter()
        now = self._clock()
        data = self._data
        expires = self._expires
        writers = self._writers
        live = self._live if expires else data.get
        for key, values in rows:
            current = live(key)
            if current is None:
                data[key] = values  # type: ignore[assignment]  # the store's own dict (above)
                writers[key] = fs
            else:
                current.update(values)
                writer = writers.get(key)
                if writer is not fs and writer != fs:
                    writers[key] = None  # declarations differ: see `_read`
            if ttl_ms is not None:
                expires[key] = now + ttl_ms / 1000
        self.stats.flushed += len(rows)
        if self.write_latency is not None:
            self.write_latency(time.perf_counter() - started)

    def keys(self) -> list[str]:
        """Live keys (tests, the CLI)."""
        return [k for k in list(self._data) if self._live(k) is not None]

    def ttl_s(self, key: str) -> float | None:
        """Remaining TTL of a key (None = no expiry or no key), like Redis' PTTL."""
        if self._live(key) is None or key not in self._expires:
            return None
        return max(0.0, self._expires[key] - self._clock())


__all__ = [
    "DecodedRow",
    "FeatureStore",
    "FeatureStoreStats",
    "MemoryFeatureStore",
    "PendingWrite",
    "ReadPlan",
    "Row",
    "entity_key",
    "read_plan",
    "set_prefix",
]
