"""`client_kwargs`: what every Kafka client of the engine gets, and a real TLS connection.

tansu 0.6 cannot terminate TLS itself (``--cert`` is accepted, but a ``tls://`` listener still
speaks plaintext) and its SASL users cannot be created on a broker that requires
authentication. The TLS test therefore puts a small TLS terminator (asyncio, the test's own CA
and server certificate made with the `openssl` CLI) in front of the broker, which advertises
the terminator's port: the client side (aiokafka with `client_kwargs`) does a real handshake
and verifies a real certificate chain and host name.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError

from config import load_config_text
from config.models import KafkaConfig
from engine.kafka.security import client_kwargs
from tests.kit.kafka import TansuBroker, missing_tool
from tests.kit.prometheus import free_port

PASSWORD = "s3cr3t-pa55word"


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    server_cert: Path
    server_key: Path
    other_ca: Path
    """A second CA that did not sign the server certificate."""


def _openssl(*args: str, cwd: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        missing_tool("the openssl CLI", "apt-get install openssl")
    subprocess.run([openssl, *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A CA, a server certificate it signed for 127.0.0.1/localhost, and an unrelated CA."""
    d = tmp_path_factory.mktemp("tls")
    for ca in ("ca", "other-ca"):
        _openssl(
            *("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"),
            *("-keyout", f"{ca}.key", "-out", f"{ca}.pem", "-subj", f"/CN=tradeengine test {ca}"),
            cwd=d,
        )
    _openssl(
        *("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key"),
        *("-out", "server.csr", "-subj", "/CN=127.0.0.1"),
        cwd=d,
    )
    (d / "server.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
        "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
    )
    _openssl(
        *("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key"),
        *("-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "server.ext"),
        cwd=d,
    )
    return TlsFiles(d / "ca.pem", d / "server.pem", d / "server.key", d / "other-ca.pem")


def _trusts(context: ssl.SSLContext, common_name: str) -> bool:
    """Whether `context` has loaded a CA certificate with this subject CN."""
    subjects: list[Any] = [ca["subject"] for ca in context.get_ca_certs()]
    return any((("commonName", common_name),) in subject for subject in subjects)


def _kafka(toml: str, env: dict[str, str] | None = None) -> KafkaConfig:
    return load_config_text(f"[kafka]\n{toml}", env=env or {}).kafka


# ------------------------------------------------------------------------------------ unit


def test_client_kwargs_when_plaintext_then_connection_settings_only() -> None:
    # Arrange
    cfg = _kafka('bootstrap_servers = ["k1:9092", "k2:9092"]\nclient_id = "engine-a"\n')
    # Act
    kwargs = client_kwargs(cfg)
    # Assert
    assert kwargs == {
        "bootstrap_servers": ["k1:9092", "k2:9092"],
        "client_id": "engine-a",
        "security_protocol": "PLAINTEXT",
    }


def test_client_kwargs_when_ssl_with_cafile_then_verifying_context_trusts_that_ca(
    tls_files: TlsFiles,
) -> None:
    # Arrange
    cfg = _kafka(f'security_protocol = "SSL"\nssl_cafile = "{tls_files.ca}"\n')
    # Act
    kwargs = client_kwargs(cfg)
    # Assert
    context = kwargs["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname is True
    assert _trusts(context, "tradeengine test ca")
    assert "sasl_mechanism" not in kwargs
    assert kwargs["security_protocol"] == "SSL"


def test_client_kwargs_when_ssl_without_cafile_then_verifying_context_with_system_cas() -> None:
    # Arrange
    cfg = _kafka('security_protocol = "SSL"\n')
    # Act
    kwargs = client_kwargs(cfg)
    # Assert
    context = kwargs["ssl_context"]
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname is True
    assert not _trusts(context, "tradeengine test ca")


def test_client_kwargs_when_sasl_plaintext_plain_then_credentials_and_no_tls() -> None:
    # Arrange
    cfg = _kafka(
        'enabled = true\nsecurity_protocol = "SASL_PLAINTEXT"\nsasl_mechanism = "PLAIN"\n'
        'sasl_username = "engine"\n',
        env={"TRADEENGINE__KAFKA__SASL_PASSWORD": PASSWORD},
    )
    # Act
    kwargs = client_kwargs(cfg)
    # Assert
    assert kwargs["security_protocol"] == "SASL_PLAINTEXT"
    assert kwargs["sasl_mechanism"] == "PLAIN"
    assert kwargs["sasl_plain_username"] == "engine"
    assert kwargs["sasl_plain_password"] == PASSWORD
    assert "ssl_context" not in kwargs
    assert PASSWORD not in repr(kwargs)
    assert PASSWORD not in str(kwargs)


async def test_client_kwargs_when_sasl_ssl_scram_then_tls_and_credentials(
    tls_files: TlsFiles,
) -> None:
    # Arrange
    cfg = _kafka(
        f'enabled = true\nsecurity_protocol = "SASL_SSL"\nsasl_mechanism = "SCRAM-SHA-512"\n'
        f'sasl_username = "engine"\nssl_cafile = "{tls_files.ca}"\n',
        env={"TRADEENGINE__KAFKA__SASL_PASSWORD": PASSWORD},
    )
    # Act
    kwargs = client_kwargs(cfg)
    # Assert
    assert kwargs["security_protocol"] == "SASL_SSL"
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-512"
    assert kwargs["sasl_plain_username"] == "engine"
    assert kwargs["sasl_plain_password"] == PASSWORD
    assert isinstance(kwargs["ssl_context"], ssl.SSLContext)
    assert PASSWORD not in repr(kwargs)
    # The kwargs are accepted by every client the engine builds (constructors do no I/O).
    AIOKafkaAdminClient(**kwargs)
    await AIOKafkaProducer(**kwargs).stop()
    await AIOKafkaConsumer(**kwargs).stop()


def test_client_kwargs_when_cafile_missing_then_value_error_names_key(tmp_path: Path) -> None:
    # Arrange
    cfg = _kafka(f'security_protocol = "SSL"\nssl_cafile = "{tmp_path / "nope.pem"}"\n')
    # Act / Assert
    with pytest.raises(ValueError, match=r"^kafka\.ssl_cafile: no such file: .*nope\.pem"):
        client_kwargs(cfg)


def test_client_kwargs_when_cafile_not_pem_then_value_error_names_key(tmp_path: Path) -> None:
    # Arrange
    bogus = tmp_path / "ca.pem"
    bogus.write_text("not a certificate\n")
    cfg = _kafka(f'security_protocol = "SASL_SSL"\nssl_cafile = "{bogus}"\n')
    # Act / Assert
    with pytest.raises(ValueError, match=r"^kafka\.ssl_cafile: .*not a readable PEM CA bundle"):
        client_kwargs(cfg)


# ------------------------------------------------------------------------------ real TLS


class TlsTerminator:
    """Accepts TLS on `port` and pipes the plaintext to the broker on `upstream_port`."""

    def __init__(self, port: int, upstream_port: int, files: TlsFiles) -> None:
        self.port = port
        self._upstream_port = upstream_port
        self._context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._context.load_cert_chain(files.server_cert, files.server_key)
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()
        self.handshakes = 0
        """Connections whose TLS handshake succeeded."""

    async def __aenter__(self) -> TlsTerminator:
        self._server = await asyncio.start_server(
            self._serve, "127.0.0.1", self.port, ssl=self._context
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._pipes:
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.handshakes += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._upstream_port)
        pipes = [
            asyncio.create_task(_pipe(reader, up_writer)),
            asyncio.create_task(_pipe(up_reader, writer)),
        ]
        self._pipes.update(pipes)
        await asyncio.gather(*pipes, return_exceptions=True)
        self._pipes.difference_update(pipes)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


@pytest.fixture
def tls_broker() -> Iterator[tuple[TansuBroker, int]]:
    """A broker that tells clients to connect to a TLS port (served by `TlsTerminator`)."""
    tls_port = free_port()
    with TansuBroker(advertised_port=tls_port) as broker:
        yield broker, tls_port


@pytest.fixture
async def terminator(
    tls_broker: tuple[TansuBroker, int], tls_files: TlsFiles
) -> AsyncIterator[TlsTerminator]:
    broker, tls_port = tls_broker
    async with TlsTerminator(tls_port, broker.port, tls_files) as proxy:
        yield proxy


async def test_connect_when_ssl_and_ca_signed_the_broker_cert_then_produce_and_consume(
    tls_broker: tuple[TansuBroker, int], terminator: TlsTerminator, tls_files: TlsFiles
) -> None:
    # Arrange
    _broker, tls_port = tls_broker
    cfg = _kafka(
        f'bootstrap_servers = ["127.0.0.1:{tls_port}"]\nsecurity_protocol = "SSL"\n'
        f'ssl_cafile = "{tls_files.ca}"\n'
    )
    # Every client goes through TLS: the broker advertises only the terminator's port.
    admin = AIOKafkaAdminClient(**client_kwargs(cfg), request_timeout_ms=5000)
    await admin.start()
    try:
        await admin.create_topics([NewTopic("sec.tls", 1, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(**client_kwargs(cfg), request_timeout_ms=5000)
    consumer = AIOKafkaConsumer(**client_kwargs(cfg), fetch_max_wait_ms=10)
    # Act
    await producer.start()
    try:
        await producer.send_and_wait("sec.tls", b"over tls", key=b"k")
    finally:
        await producer.stop()
    await consumer.start()
    try:
        consumer.assign([TopicPartition("sec.tls", 0)])
        await consumer.seek_to_beginning()
        record = await asyncio.wait_for(consumer.getone(), 10)
    finally:
        await consumer.stop()
    # Assert
    assert record.value == b"over tls"
    assert terminator.handshakes >= 2


async def test_connect_when_ssl_and_cafile_is_another_ca_then_certificate_rejected(
    tls_broker: tuple[TansuBroker, int],
    terminator: TlsTerminator,
    tls_files: TlsFiles,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Arrange
    _broker, tls_port = tls_broker
    cfg = _kafka(
        f'bootstrap_servers = ["127.0.0.1:{tls_port}"]\nsecurity_protocol = "SSL"\n'
        f'ssl_cafile = "{tls_files.other_ca}"\n'
    )
    admin = AIOKafkaAdminClient(**client_kwargs(cfg), request_timeout_ms=3000)
    # Act / Assert
    try:
        with pytest.raises(KafkaConnectionError):
            await asyncio.wait_for(admin.start(), 10)
    finally:
        await admin.close()
    assert "CERTIFICATE_VERIFY_FAILED" in caplog.text
    assert terminator.handshakes == 0
