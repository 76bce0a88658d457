"""The example subscriber's connection options (TLS / SASL), without a broker."""

from __future__ import annotations

import ssl

import pytest

from tests.factories import example_subscriber as _module


def test_plaintext_needs_nothing():
    assert _module().connection_options() == {"security_protocol": "PLAINTEXT"}


def test_sasl_ssl_carries_the_credentials_and_a_tls_context():
    opts = _module().connection_options("sasl_ssl", sasl_mechanism="SCRAM-SHA-512",
                                        sasl_username="me", sasl_password="secret")
    assert opts["security_protocol"] == "SASL_SSL"
    assert (opts["sasl_mechanism"], opts["sasl_plain_username"], opts["sasl_plain_password"]) \
        == ("SCRAM-SHA-512", "me", "secret")
    assert isinstance(opts["ssl_context"], ssl.SSLContext)
    assert opts["ssl_context"].verify_mode == ssl.CERT_REQUIRED


@pytest.mark.parametrize(("args", "kwargs", "says"), [
    (("SASL_PLAINTEXT",), {"sasl_username": "me"}, "KAFKA_SASL_PASSWORD"),
    (("SASL_SSL",), {"sasl_password": "x"}, "--sasl-username"),
    (("PLAINTEXT",), {"ssl_cafile": "ca.crt"}, "use SSL or SASL_SSL"),
    (("TLS",), {}, "unknown security protocol"),
])
def test_incomplete_settings_say_what_is_missing(args, kwargs, says):
    with pytest.raises(ValueError, match=says):
        _module().connection_options(*args, **kwargs)


def test_a_missing_ca_file_fails_before_connecting(tmp_path):
    with pytest.raises(OSError):
        _module().connection_options("SSL", ssl_cafile=str(tmp_path / "absent.crt"))
