"""Connection security from the settings: the one place that turns ``STREAMER_KAFKA__*`` and
``STREAMER_CASSANDRA__*`` TLS and authentication settings into client arguments.

* :func:`kafka_client_kwargs`: keyword arguments for aiokafka's consumer, producer and admin
  client (``security_protocol``, ``ssl_context``, ``sasl_*``);
* :func:`faust_credentials`: the same for faust's ``broker_credentials`` (its aiokafka driver
  turns them back into these keyword arguments for the worker's consumer and producer);
* :func:`cassandra_connection_kwargs`: ``auth_provider`` and ``ssl_context`` for
  cassandra-driver's ``Cluster``.

TLS always verifies the server's certificate (``CERT_REQUIRED``) against ``ssl_cafile`` or the
system trust store, and its name unless ``ssl_check_hostname`` is off.  A missing or unreadable
file is a :class:`~streamer.errors.ConfigurationError` naming the variable to fix.
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError

if TYPE_CHECKING:
    from ..settings import CassandraSettings, KafkaSettings


def tls_context(section: KafkaSettings | CassandraSettings, prefix: str) -> ssl.SSLContext:
    """A client TLS context (TLS 1.2 or later) from a section's ``ssl_*`` settings."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = section.ssl_check_hostname
    context.verify_mode = ssl.CERT_REQUIRED
    if section.ssl_cafile:
        try:
            context.load_verify_locations(cafile=section.ssl_cafile)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigurationError(
                f"{prefix}SSL_CAFILE={section.ssl_cafile}: cannot load a CA bundle from it "
                f"({exc}); it must be a readable PEM file") from exc
    if section.ssl_certfile:
        password = section.ssl_key_password
        try:
            context.load_cert_chain(section.ssl_certfile, section.ssl_keyfile,
                                    password.get_secret_value() if password else None)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigurationError(
                f"{prefix}SSL_CERTFILE={section.ssl_certfile} / {prefix}SSL_KEYFILE="
                f"{section.ssl_keyfile}: cannot load the client certificate ({exc}); they must "
                f"be readable PEM files of one key pair ({prefix}SSL_KEY_PASSWORD if the key is "
                "encrypted)") from exc
    return context


def kafka_client_kwargs(kafka: KafkaSettings) -> dict[str, Any]:
    """aiokafka client arguments (consumer, producer, admin) for ``kafka``'s security."""
    protocol = kafka.security_protocol
    kwargs: dict[str, Any] = {"security_protocol": protocol}
    if protocol.endswith("SSL"):
        kwargs["ssl_context"] = tls_context(kafka, "STREAMER_KAFKA__")
    if protocol.startswith("SASL"):
        assert kafka.sasl_password is not None  # the settings validator guarantees it
        kwargs.update(sasl_mechanism=kafka.sasl_mechanism,
                      sasl_plain_username=kafka.sasl_username,
                      sasl_plain_password=kafka.sasl_password.get_secret_value())
    return kwargs


def faust_credentials(kafka: KafkaSettings) -> Any:
    """faust ``broker_credentials`` for ``kafka``'s security (None: plaintext)."""
    from faust.auth import SASLCredentials, SSLCredentials

    protocol = kafka.security_protocol
    if protocol == "PLAINTEXT":
        return None
    if protocol == "SSL":
        return SSLCredentials(tls_context(kafka, "STREAMER_KAFKA__"))
    # faust's SASL protocol follows the context: SASL_SSL with one, SASL_PLAINTEXT without
    kwargs = kafka_client_kwargs(kafka)
    return SASLCredentials(username=kwargs["sasl_plain_username"],
                           password=kwargs["sasl_plain_password"],
                           mechanism=kwargs["sasl_mechanism"],
                           ssl_context=kwargs.get("ssl_context"))


def kafka_unreachable(kafka: KafkaSettings, exc: BaseException) -> str:
    """The message for a Kafka that refused a connection: with security configured, a bad
    password or certificate looks like an unreachable broker to aiokafka (its log names it)."""
    where = f"cannot reach Kafka at {kafka.bootstrap_servers} ({exc!r}); "
    if kafka.security_protocol == "PLAINTEXT":
        return where + ("is it running, and is its listener PLAINTEXT (else set "
                        "STREAMER_KAFKA__SECURITY_PROTOCOL)? Locally: `make up`")
    return where + (f"is it running, and do its listener and certificate match "
                    f"STREAMER_KAFKA__SECURITY_PROTOCOL={kafka.security_protocol}, "
                    "STREAMER_KAFKA__SASL_* and STREAMER_KAFKA__SSL_*? The aiokafka error logged "
                    "just before names a TLS or SASL failure")


def cassandra_refusal(cassandra: CassandraSettings, errors: dict[Any, Any]) -> str | None:
    """What to fix when Cassandra refused the connection for its credentials or TLS (None: not
    a security failure); ``errors`` is ``NoHostAvailable.errors``."""
    from cassandra import AuthenticationFailed

    for error in errors.values():
        if isinstance(error, AuthenticationFailed):
            if not cassandra.username:
                return ("Cassandra asks for authentication: set STREAMER_CASSANDRA__USERNAME "
                        f"and STREAMER_CASSANDRA__PASSWORD ({error})")
            return (f"Cassandra refused the credentials of STREAMER_CASSANDRA__USERNAME="
                    f"{cassandra.username}: check it and STREAMER_CASSANDRA__PASSWORD ({error})")
        # the driver re-raises a failed handshake as an OSError quoting the ssl error
        if isinstance(error, ssl.SSLError) or (isinstance(error, OSError) and "[SSL" in str(error)):
            return ("TLS to Cassandra failed: check STREAMER_CASSANDRA__SSL_CAFILE (the CA that "
                    "signs the nodes' certificates) and STREAMER_CASSANDRA__SSL_CHECK_HOSTNAME "
                    f"({error})")
    return None


def cassandra_connection_kwargs(cassandra: CassandraSettings) -> dict[str, Any]:
    """cassandra-driver ``Cluster`` arguments: PasswordAuthenticator credentials and TLS."""
    from cassandra.auth import PlainTextAuthProvider

    kwargs: dict[str, Any] = {}
    if cassandra.username:
        password = cassandra.password.get_secret_value() if cassandra.password else ""
        kwargs["auth_provider"] = PlainTextAuthProvider(cassandra.username, password)
    if cassandra.ssl_enabled:
        kwargs["ssl_context"] = tls_context(cassandra, "STREAMER_CASSANDRA__")
    return kwargs
