"""The ``listen`` block's shape; the gateway judges the files (test_tls_listener.py)."""

from __future__ import annotations

from typing import Any

import pytest
from kairos_core import ConfigError, GatewayConfig, ListenConfig, config_to_json, load_config

CERT = {"cert_file": "/tls/a.pem", "key_file": "/tls/a.key"}


def listen(block: dict[str, Any]) -> ListenConfig:
    return load_config({"version": 1, "routers": [], "listen": block}).listen


def errors(block: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        listen(block)
    return [str(error) for error in info.value.errors]


def test_defaults_are_plain_http() -> None:
    config = load_config({"version": 1, "routers": []})
    assert config.listen == ListenConfig()
    assert config.listen.tls is None
    assert config.listen.http_redirect_address is None


def test_a_full_block_round_trips() -> None:
    block = {
        "tls": {
            **CERT,
            "certificates": [
                {"cert_file": "/tls/b.pem", "key_file": "/tls/b.key", "server_names": ["B.Example"]}
            ],
            "min_version": "1.3",
            "client_ca_file": "/tls/ca.pem",
            "client_cert": "optional",
            "client_subject_header": "X-Peer",
        },
        "http_redirect": "[::]:80",
        "https_port": 443,
    }
    config = load_config({"version": 1, "routers": [], "listen": block})
    tls = config.listen.tls
    assert tls is not None
    assert tls.certificates[0].server_names == ["b.example"]
    assert tls.client_verification == "optional"
    assert config.listen.http_redirect_address == ("::", 80)
    assert [loc for loc, _ in tls.all_certificates()] == [(), ("certificates", 0)]
    again = GatewayConfig.model_validate_json(config_to_json(config))
    assert again == config


def test_client_verification_defaults_to_required_with_a_ca() -> None:
    tls = listen({"tls": {**CERT, "client_ca_file": "/tls/ca.pem"}}).tls
    assert tls is not None
    assert tls.client_verification == "required"
    plain = listen({"tls": CERT}).tls
    assert plain is not None
    assert plain.client_verification == "off"


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        (
            {"tls": {}},
            "listen.tls: needs a certificate: 'cert_file' and 'key_file', or 'certificates'",
        ),
        ({"tls": {"cert_file": "/a.pem"}}, "listen.tls: give 'cert_file' and 'key_file' together"),
        (
            {"tls": {**CERT, "client_cert": "required"}},
            "listen.tls: client_cert 'required' needs 'client_ca_file' (the CAs to verify "
            "client certificates with)",
        ),
        (
            {"tls": {**CERT, "client_cert": "off", "client_ca_file": "/ca.pem"}},
            "listen.tls: 'client_ca_file' has no use with client_cert 'off'; remove one",
        ),
        (
            {"http_redirect": "0.0.0.0:80"},
            "listen: 'http_redirect' needs 'tls': there is no https to redirect to",
        ),
        (
            {"tls": CERT, "http_redirect": "80"},
            "listen.http_redirect: must be 'host:port', e.g. '127.0.0.1:5901' (got \"80\")",
        ),
        ({"tls": {**CERT, "min_version": "1.1"}}, "listen.tls.min_version"),
        (
            {"tls": {**CERT, "client_subject_header": "X Subject"}},
            "listen.tls.client_subject_header: 'X Subject' is not a valid header name",
        ),
        (
            {"tls": {"certificates": [{**CERT, "server_names": ["a..b"]}]}},
            "listen.tls.certificates[0].server_names: 'a..b' is not a DNS name",
        ),
        (
            {"tls": {"certificates": [{**CERT, "server_names": []}]}},
            "listen.tls.certificates[0].server_names: must name at least one",
        ),
        ({"tls": {**CERT, "key_file": " "}}, "listen.tls.key_file: must be a file path"),
        ({"tls": CERT, "https_port": 0}, "listen.https_port"),
    ],
)
def test_shape_errors_name_the_field(block: dict[str, Any], expected: str) -> None:
    found = errors(block)
    assert any(line.startswith(expected) for line in found), found


def test_startup_fields_leave_out_the_certificate_files() -> None:
    one = listen({"tls": {**CERT, "min_version": "1.3"}})
    other = listen(
        {
            "tls": {
                "cert_file": "/tls/new.pem",
                "key_file": "/tls/new.key",
                "certificates": [CERT],
                "min_version": "1.3",
            }
        }
    )
    assert one != other
    assert one.startup_fields == other.startup_fields
    assert one.startup_fields != listen({"tls": CERT}).startup_fields
