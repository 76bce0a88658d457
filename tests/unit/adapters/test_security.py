"""streamer.adapters.security: settings -> aiokafka / faust / cassandra-driver arguments.
(The same settings against a real SASL_SSL Kafka and a TLS Cassandra: tests/e2e/
test_secure_connections.py.)"""

from __future__ import annotations

import ssl

import pytest
from faust.auth import SASLCredentials, SSLCredentials
from faust.types.auth import AuthProtocol, SASLMechanism
from pydantic import SecretStr, ValidationError

from streamer.adapters.security import (
    cassandra_connection_kwargs,
    cassandra_refusal,
    faust_credentials,
    kafka_client_kwargs,
    kafka_unreachable,
)
from streamer.errors import ConfigurationError
from streamer.settings import CassandraSettings, KafkaSettings, Settings

SASL = dict(sasl_username="svc", sasl_password=SecretStr("pw"))


def test_plaintext_is_the_default_and_adds_nothing_but_the_protocol():
    assert kafka_client_kwargs(KafkaSettings()) == {"security_protocol": "PLAINTEXT"}
    assert faust_credentials(KafkaSettings()) is None
    assert cassandra_connection_kwargs(CassandraSettings()) == {}


def test_sasl_ssl_gives_a_verifying_context_and_the_credentials():
    kafka = KafkaSettings(security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-256", **SASL)
    kwargs = kafka_client_kwargs(kafka)
    assert kwargs["security_protocol"] == "SASL_SSL"
    assert (kwargs["sasl_mechanism"], kwargs["sasl_plain_username"],
            kwargs["sasl_plain_password"]) == ("SCRAM-SHA-256", "svc", "pw")
    context = kwargs["ssl_context"]
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2


def test_faust_credentials_match_each_protocol():
    ssl_only = faust_credentials(KafkaSettings(security_protocol="SSL"))
    assert isinstance(ssl_only, SSLCredentials) and ssl_only.protocol is AuthProtocol.SSL
    sasl_ssl = faust_credentials(KafkaSettings(security_protocol="SASL_SSL", **SASL))
    assert isinstance(sasl_ssl, SASLCredentials)
    assert sasl_ssl.protocol is AuthProtocol.SASL_SSL
    assert sasl_ssl.mechanism is SASLMechanism.SCRAM_SHA_512  # the default mechanism
    assert (sasl_ssl.username, sasl_ssl.password) == ("svc", "pw")
    plain = faust_credentials(KafkaSettings(security_protocol="SASL_PLAINTEXT",
                                            sasl_mechanism="PLAIN", **SASL))
    assert plain.protocol is AuthProtocol.SASL_PLAINTEXT and plain.ssl_context is None
    assert plain.mechanism is SASLMechanism.PLAIN


def test_faust_driver_turns_the_credentials_into_the_same_client_arguments():
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    kafka = KafkaSettings(security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN", **SASL)
    assert credentials_to_aiokafka_auth(faust_credentials(kafka)) == {
        **kafka_client_kwargs(kafka), "ssl_context": None}


def test_check_hostname_can_be_turned_off():
    kwargs = kafka_client_kwargs(KafkaSettings(security_protocol="SSL", ssl_check_hostname=False))
    assert kwargs["ssl_context"].check_hostname is False
    assert kwargs["ssl_context"].verify_mode == ssl.CERT_REQUIRED  # still verified


@pytest.mark.parametrize("missing", [{"sasl_username": None}, {"sasl_password": None}])
def test_sasl_without_credentials_is_refused_naming_the_variables(missing):
    with pytest.raises(ValidationError, match="STREAMER_KAFKA__SASL_USERNAME and "
                                              "STREAMER_KAFKA__SASL_PASSWORD"):
        KafkaSettings(security_protocol="SASL_SSL", **{**SASL, **missing})


def test_tls_files_without_tls_are_refused():
    with pytest.raises(ValidationError, match="STREAMER_KAFKA__SSL_CAFILE set but TLS is off"):
        KafkaSettings(ssl_cafile="/ca.pem")
    with pytest.raises(ValidationError, match="STREAMER_CASSANDRA__SSL_CAFILE set but TLS is off"):
        CassandraSettings(ssl_cafile="/ca.pem")
    with pytest.raises(ValidationError, match="both STREAMER_KAFKA__SSL_CERTFILE and"):
        KafkaSettings(security_protocol="SSL", ssl_certfile="/c.pem")
    with pytest.raises(ValidationError, match="STREAMER_CASSANDRA__USERNAME is not"):
        CassandraSettings(password=SecretStr("pw"))


def test_the_settings_come_from_streamer_variables(monkeypatch):
    for key, value in {"STREAMER_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
                       "STREAMER_KAFKA__SASL_MECHANISM": "PLAIN",
                       "STREAMER_KAFKA__SASL_USERNAME": "svc",
                       "STREAMER_KAFKA__SASL_PASSWORD": "pw",
                       "STREAMER_CASSANDRA__SSL_ENABLED": "true",
                       "STREAMER_CASSANDRA__USERNAME": "svc",
                       "STREAMER_CASSANDRA__PASSWORD": "pw"}.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    assert kafka_client_kwargs(settings.kafka)["sasl_mechanism"] == "PLAIN"
    kwargs = cassandra_connection_kwargs(settings.cassandra)
    assert kwargs["auth_provider"].username == "svc"
    assert kwargs["auth_provider"].password == "pw"
    assert isinstance(kwargs["ssl_context"], ssl.SSLContext)
    assert "pw" not in repr(settings)  # secrets stay out of logs


def test_unreadable_tls_files_name_the_variable(tmp_path):
    with pytest.raises(ConfigurationError, match="STREAMER_KAFKA__SSL_CAFILE=.*readable PEM"):
        kafka_client_kwargs(KafkaSettings(security_protocol="SSL",
                                          ssl_cafile=str(tmp_path / "nope.pem")))
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate")
    with pytest.raises(ConfigurationError, match="STREAMER_CASSANDRA__SSL_CERTFILE"):
        cassandra_connection_kwargs(CassandraSettings(
            ssl_enabled=True, ssl_certfile=str(bad), ssl_keyfile=str(bad)))


def test_messages_say_what_to_check():
    plain = kafka_unreachable(KafkaSettings(), OSError("refused"))
    assert "make up" in plain and "STREAMER_KAFKA__SECURITY_PROTOCOL" in plain
    secure = kafka_unreachable(KafkaSettings(security_protocol="SASL_SSL", **SASL),
                               OSError("refused"))
    assert "STREAMER_KAFKA__SASL_*" in secure and "STREAMER_KAFKA__SSL_*" in secure
    from cassandra import AuthenticationFailed

    assert cassandra_refusal(CassandraSettings(), {"h": OSError("refused")}) is None
    assert "asks for authentication" in cassandra_refusal(
        CassandraSettings(), {"h": AuthenticationFailed("Remote end requires authentication")})
    assert "TLS to Cassandra failed" in cassandra_refusal(
        CassandraSettings(ssl_enabled=True),
        {"h": PermissionError(1, "Last error: [SSL: CERTIFICATE_VERIFY_FAILED] ...")})
