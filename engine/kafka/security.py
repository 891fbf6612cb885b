"""Connection and security settings shared by every Kafka client of the engine.

Why it exists: the egress producer, the dead-letter producer, the ingress consumer and the topic
admin must all reach the same cluster the same way; building their common keyword arguments in
one place means a TLS or SASL setting cannot be forgotten on one of them.

Trade-offs:

- The TLS context is built here, eagerly, so a bad ``kafka.ssl_cafile`` is a clear start-up
  error naming the key rather than a connection failure deep inside aiokafka. Without a CA file
  the system's CAs are trusted (a managed cluster with a public certificate needs nothing else);
  hostname checking is always on (aiokafka's `create_ssl_context` does not allow turning it off).
- A relative ``ssl_cafile`` is taken relative to the working directory, as
  ``feature_store.redis.ca_file`` is.
- The password is handed to aiokafka as the plain string it needs, but the returned mapping's
  ``repr`` masks it, so logging the keyword arguments cannot leak it. (A copy made with
  ``{**client_kwargs(cfg), ...}`` is a plain dict again: log the config, not the kwargs.)
"""

from __future__ import annotations

import ssl
from typing import Any

from aiokafka.helpers import create_ssl_context

from config.models import KafkaConfig

_MASK = "**********"
_SECRET_KEYS = frozenset({"sasl_plain_password"})


class ClientKwargs(dict[str, Any]):
    """A plain keyword-argument dict whose repr/str hide the SASL password."""

    def __repr__(self) -> str:
        shown = {k: (_MASK if k in _SECRET_KEYS and v is not None else v) for k, v in self.items()}
        return repr(shown)

    __str__ = __repr__


def client_kwargs(cfg: KafkaConfig) -> dict[str, Any]:
    """Keyword arguments for `AIOKafkaProducer`, `AIOKafkaConsumer` and `AIOKafkaAdminClient`.

    Raises ValueError naming ``kafka.ssl_cafile`` when that file is missing or not a CA bundle.
    """
    kwargs = ClientKwargs(
        bootstrap_servers=list(cfg.bootstrap_servers),
        client_id=cfg.client_id,
        security_protocol=cfg.security_protocol,
    )
    if cfg.security_protocol in ("SSL", "SASL_SSL"):
        kwargs["ssl_context"] = _ssl_context(cfg)
    if cfg.security_protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
        # The config validator guarantees mechanism, username and password for an enabled
        # bridge; `topics` commands may run with a disabled one, so pass what is there and let
        # the broker refuse an incomplete login.
        if cfg.sasl_mechanism is not None:
            kwargs["sasl_mechanism"] = cfg.sasl_mechanism
        kwargs["sasl_plain_username"] = cfg.sasl_username
        kwargs["sasl_plain_password"] = (
            cfg.sasl_password.get_secret_value() if cfg.sasl_password is not None else None
        )
    return kwargs


def _ssl_context(cfg: KafkaConfig) -> ssl.SSLContext:
    cafile = cfg.ssl_cafile
    if cafile is None:
        context: ssl.SSLContext = create_ssl_context()
        return context
    if not cafile.is_file():
        raise ValueError(f"kafka.ssl_cafile: no such file: {cafile}")
    try:
        context = create_ssl_context(cafile=str(cafile))
    except (ssl.SSLError, OSError) as exc:
        raise ValueError(
            f"kafka.ssl_cafile: {cafile} is not a readable PEM CA bundle ({exc})"
        ) from exc
    return context
