import copy
import json
from pathlib import Path
from typing import Any

import pytest
from kairos_core import (
    ConfigError,
    GatewayConfig,
    RouteTimeouts,
    Timeouts,
    config_to_json,
    effective_timeouts,
    load_config,
    load_config_file,
    load_router,
    redacted,
)

SECRET = "k" * 32


def route(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "external_path": "/users/{id}",
        "internal_path": "/v1/users/{id}",
        "methods": ["GET"],
        "backends": [{"host": "http://users", "port": 8080}],
    }
    base.update(overrides)
    return base


def config(*routes: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"version": 1, "routers": list(routes) if routes else [route()], **top}


def errors_of(data: object) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(data)
    return [str(error) for error in info.value.errors]


def test_empty_router_list_is_valid() -> None:
    cfg = load_config({"version": 1, "routers": []})
    assert cfg.routers == []
    assert cfg.timeouts == Timeouts(connect_ms=5000, read_ms=30000)


def test_defaults() -> None:
    r = load_config(config()).routers[0]
    assert r.load_balancing_strategy == "round_robin"
    assert r.auth_required is False
    assert r.retry_config is None
    assert r.protocol == "http"
    backend = r.backends[0]
    assert (backend.weight, backend.tls_verify, backend.address) == (1, True, "http://users:8080")


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        # one error per case: (config, "path: message" fragment)
        ({"routers": "x"}, "routers: must be a list"),
        ({}, "routers: field required"),
        ([], "the configuration must be a JSON object"),
        (config(version=0), "version: must be >= 1 (got 0)"),
        (
            config(route(backends=[{"host": "http://a", "port": 0}])),
            "routers[0].backends[0].port: must be between 1 and 65535 (got 0)",
        ),
        (
            config(route(backends=[{"host": "http://a", "port": 70000}])),
            "must be between 1 and 65535 (got 70000)",
        ),
        (
            config(route(backends=[{"host": "http://a", "port": 1, "weight": 0}])),
            "weight: must be >= 1",
        ),
        (config(route(backends=[])), "routers[0].backends: must not be empty"),
        (config(route(methods=[])), "routers[0].methods: must not be empty"),
        (
            config(route(methods=["GET", "FETCH"])),
            "routers[0].methods[1]: must be one of: GET, HEAD, POST",
        ),
        (
            config(route(load_balancing_strategy="fastest")),
            "must be one of: round_robin, least_connections, random, weighted, ip_hash, "
            "latency_aware",
        ),
        (
            config(route(extrenal_path="/x")),
            "routers[0].extrenal_path: unknown field; did you mean 'external_path'?",
        ),
        (config(route(), rate_limt={}), "rate_limt: unknown field; did you mean 'rate_limit'?"),
        (
            config(route(backends=[{"host": "http://a", "port": 1, "wieght": 2}])),
            "routers[0].backends[0].wieght: unknown field; did you mean 'weight'?",
        ),
        (
            config(route(ai_policy={})),
            "routers[0].ai_policy: 'ai_policy' is a kairos-rs field that Kairos does not "
            "support yet; remove it",
        ),
        (
            config(route(response_transformation={"status_code_mappings": [{"condition": "x"}]})),
            "routers[0]: response_transformation.status_code_mappings[0].condition is not "
            "supported",
        ),
        (
            config(route(request_transformation={"headers": [{"action": "drop", "name": "X"}]})),
            "routers[0]: request_transformation.headers[0].action must be one of add, set, "
            "remove, replace",
        ),
        (config(route(), ai={}), "ai: 'ai' is a kairos-rs field"),
        (config(route(protocol="ftp")), "protocol 'ftp' is not supported yet"),
        (config(route(protocol="gopher")), "protocol: must be one of: http, websocket"),
        (
            config(route(methods=["POST"], protocol="websocket")),
            "routers[0]: a WebSocket route (protocol 'websocket' or websocket) needs GET",
        ),
        (
            config(route(websocket={"idle_timeout_s": 0})),
            "routers[0].websocket.idle_timeout_s: must be > 0 and <= 86400 (got 0)",
        ),
        (
            config(route(retry={"max_retries": 11})),
            "routers[0].retry.max_retries: must be between 0 and 10 (got 11)",
        ),
        (
            config(route(retry_config={"initial_backoff_ms": 10, "max_backoff_ms": 5})),
            "initial_backoff_ms (10) must not exceed max_backoff_ms (5)",
        ),
        (
            config(route(retry_config={"backoff_multiplier": 0.5})),
            "backoff_multiplier: must be >= 1",
        ),
        (
            config(route(retry_config={"retryable_status_codes": [503, 99]})),
            "retryable_status_codes[1]: must be between 100 and 599 (got 99)",
        ),
        (
            config(route(retry={}, retry_config={})),
            "'retry_config' and 'retry' are the same setting",
        ),
        (
            config(route(timeouts={"connect_ms": 0})),
            "routers[0].timeouts.connect_ms: must be between 1 and 600000",
        ),
        (
            config(timeouts={"read_ms": 3_600_001}),
            "timeouts.read_ms: must be between 1 and 3600000",
        ),
        (config(route(auth_required="maybe")), "auth_required: must be true or false"),
        (
            config(trusted_proxies=["10.0.0.1/8"]),
            "trusted_proxies[0]: must be an IP address or CIDR network",
        ),
        (config(trusted_proxies=["nope"]), "trusted_proxies[0]: must be an IP address"),
    ],
)
def test_single_error(data: object, expected: str) -> None:
    errors = errors_of(data)
    assert len(errors) == 1, errors
    assert expected in errors[0]


@pytest.mark.parametrize(
    ("host", "fragment"),
    [
        ("users", "must start with http:// or https://"),
        ("ws://users", "must start with http:// or https://"),
        ("wss://users", "must start with http:// or https://"),
        ("ftp://users", "must start with http:// or https://"),
        ("http://users:8080", "put the port in `port`"),
        ("http://[::1]:8080", "put the port in `port`"),
        ("http://users/api", "without a path"),
        ("http://users?x=1", "without a path, query"),
        ("http://u:p@users", "user information"),
        ("http://", "must name a host"),
        ("http://us ers", "must name a host"),
        ("http://[::1", "unterminated IPv6"),
        ("http://[zz]", "is not an IPv6 address"),
    ],
)
def test_bad_backend_host(host: str, fragment: str) -> None:
    errors = errors_of(config(route(backends=[{"host": host, "port": 80}])))
    assert len(errors) == 1, errors
    assert errors[0].startswith("routers[0].backends[0].host: ")
    assert fragment in errors[0]


@pytest.mark.parametrize(
    ("host", "scheme", "hostname", "address"),
    [
        ("http://users", "http", "users", "http://users:80"),
        ("HTTPS://api.example.com", "https", "api.example.com", "https://api.example.com:80"),
        ("http://[::1]", "http", "::1", "http://[::1]:80"),
        ("http://10.0.0.7", "http", "10.0.0.7", "http://10.0.0.7:80"),
        ("http://users_svc", "http", "users_svc", "http://users_svc:80"),
    ],
)
def test_backend_properties(host: str, scheme: str, hostname: str, address: str) -> None:
    backend = (
        load_config(config(route(backends=[{"host": host, "port": 80}]))).routers[0].backends[0]
    )
    assert (backend.scheme, backend.hostname, backend.address) == (scheme, hostname, address)


@pytest.mark.parametrize(
    ("backend", "ok"),
    [
        ({"host": "https://a", "port": 1, "tls_verify": False, "tls_ca_file": "/ca.pem"}, True),
        ({"host": "http://a", "port": 1, "tls_verify": True}, True),
        ({"host": "http://a", "port": 1, "tls_verify": False}, False),
        ({"host": "http://a", "port": 1, "tls_ca_file": "/ca.pem"}, False),
        ({"host": "http://a", "port": 1, "health_check_path": "/healthz"}, True),
        ({"host": "http://a", "port": 1, "health_check_path": "healthz"}, False),
    ],
)
def test_backend_tls_and_health(backend: dict[str, Any], ok: bool) -> None:
    data = config(route(backends=[backend]))
    if ok:
        load_config(data)
    else:
        assert len(errors_of(data)) == 1


@pytest.mark.parametrize(
    ("external", "internal", "fragment"),
    [
        ("users", "/x", "external_path: must start with '/'"),
        ("/users", "x", "internal_path: must start with '/'"),
        ("/a/../b", "/x", "must not contain a '.' or '..' segment"),
        ("/a/./b", "/x", "must not contain a '.' or '..' segment"),
        ("/a/%2e%2e/b", "/x", "must not contain a '.' or '..' segment"),
        ("/a", "/x/..", "internal_path: must not contain a '.' or '..' segment"),
        ("/a//b", "/x", "empty segment"),
        ("/a?b=1", "/x", "must not contain '?'"),
        ("/a#b", "/x", "must not contain '#'"),
        ("/a b", "/x", "whitespace or control"),
        ("/a\tb", "/x", "whitespace or control"),
        ("/caf\u00e9", "/x", "must be ASCII"),
        ("/users/{user_id", "/x", "unbalanced braces"),
        ("/users/}", "/x", "unbalanced braces"),
        ("/users/{}", "/x", "has no name"),
        ("/users/{a b}", "/x", "whitespace or control"),
        ("/users/{a-b}", "/x", "is not an identifier"),
        ("/users/{1x}", "/x", "is not an identifier"),
        ("/users/user-{id}", "/x", "must fill a whole segment"),
        ("/users/{a}{b}", "/x", "must fill a whole segment"),
        ("/users/{id}/{id}", "/x", "'id' is used twice"),
        ("/files/{*rest}/x", "/x", "must be the last segment"),
        ("/u/{id}", "/x/{uid}", "placeholder 'uid' does not appear in external_path"),
        ("/f/{*rest}", "/x/{rest}", "use it as {*rest} in the last segment"),
        ("/f/{*rest}", "/{*rest}/x", "use it as {*rest} in the last segment"),
        ("/f/{id}", "/x/{*id}", "one-segment placeholder"),
        ("/health", "/x", "reserved path: '/health' is served by the gateway itself"),
        ("/metrics", "/x", "reserved path"),
        ("/api/backends", "/x", "reserved path"),
        ("/api/openapi.json", "/x", "reserved path"),
        ("/api/routes", "/x", "management API"),
        ("/api/routes/{x}", "/x/{x}", "management API"),
        ("/api/config/deep/{*rest}", "/x", "management API"),
        ("/api/metrics/x", "/x", "management API"),
    ],
)
def test_bad_paths(external: str, internal: str, fragment: str) -> None:
    errors = errors_of(config(route(external_path=external, internal_path=internal)))
    assert len(errors) == 1, errors
    assert errors[0].startswith("routers[0].")
    assert fragment in errors[0]


@pytest.mark.parametrize(
    ("external", "internal"),
    [
        ("/", "/"),
        ("/users/", "/users/"),
        ("/files/a.b", "/x"),
        ("/files/..a", "/x"),
        ("/{x}", "/{x}"),
        ("/api/{*rest}", "/{*rest}"),
        ("/api/routesx", "/x"),
        ("/health/deep", "/x"),
        ("/f/{*rest}", "/static/{*rest}"),
        ("/u/{uid}/p/{pid}", "/p/{pid}/u/{uid}"),
        ("/u/{id}", "/u/{id}/details"),
        ("/caf%C3%A9", "/cafe"),
    ],
)
def test_good_paths(external: str, internal: str) -> None:
    load_config(config(route(external_path=external, internal_path=internal)))


def test_methods_normalised_and_deduplicated() -> None:
    cfg = load_config(config(route(methods=["get", "POST", "GET", "post"])))
    assert cfg.routers[0].methods == ["GET", "POST"]


def test_legacy_host_port_becomes_backends() -> None:
    r = route(host="http://legacy", port=9000)
    del r["backends"]
    backend = load_config(config(r)).routers[0].backends[0]
    assert backend.address == "http://legacy:9000"


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ({"host": "http://legacy", "port": 9000}, "give either 'backends' or the legacy"),
        ({"host": "http://legacy"}, "needs both 'host' and 'port'"),
    ],
)
def test_legacy_host_port_errors(extra: dict[str, Any], fragment: str) -> None:
    r = route(**extra)
    if "port" not in extra:
        del r["backends"]
    (error,) = errors_of(config(r))
    assert fragment in error


@pytest.mark.parametrize(
    ("routes", "fragment"),
    [
        (
            [route(external_path="/u/{id}"), route(external_path="/u/{uid}", internal_path="/x")],
            "routers[1].external_path: routers[0] and routers[1] both route GET '/u/{id}' "
            "(same pattern as '/u/{uid}')",
        ),
        (
            [
                route(external_path="/a", internal_path="/x", methods=["GET", "POST"]),
                route(external_path="/a", internal_path="/y", methods=["POST", "PUT"]),
            ],
            "routers[0] and routers[1] both route POST '/a'",
        ),
    ],
)
def test_duplicate_routes(routes: list[dict[str, Any]], fragment: str) -> None:
    (error,) = errors_of(config(*routes))
    assert fragment in error


def test_same_pattern_with_disjoint_methods_is_fine() -> None:
    load_config(config(route(methods=["GET"]), route(methods=["POST", "DELETE"])))


@pytest.mark.parametrize(
    ("top", "fragment"),
    [
        ({}, "routers[0] has auth_required but no JWT key is configured"),
        ({"jwt_secret": "short"}, "jwt_secret: must be at least 32 bytes long"),
        ({"jwt_secret": "please-change-this-secret"}, "jwt_secret: is a well-known placeholder"),
        ({"jwt_secret": "CHANGEME"}, "well-known placeholder"),
        ({"jwt_secret": "Your-256-Bit-Secret"}, "well-known placeholder"),
        ({"jwt_secret": "please-change-this-to-something-long-enough"}, "well-known placeholder"),
        ({"jwt_secret": "this-is-your-secret-key-it-is-quite-long"}, "well-known placeholder"),
        ({"jwt": {"secret": "short"}}, "jwt.secret: must be at least 32 bytes"),
        (
            {"jwt_secret": SECRET, "jwt": {"secret": "l" * 32}},
            "jwt.secret: differs from jwt_secret",
        ),
        (
            {"jwt_secret": SECRET, "jwt": {"jwks_url": "https://idp/jwks"}},
            "jwt_secret: is unused",
        ),
    ],
)
def test_auth_requires_a_good_key(top: dict[str, Any], fragment: str) -> None:
    (error,) = errors_of(config(route(auth_required=True), **top))
    assert fragment in error
    for value in ("short", "please-change", "CHANGEME", "Your-256", "your-secret-key", SECRET):
        assert value not in error


@pytest.mark.parametrize(
    "top",
    [
        {"jwt_secret": SECRET},
        {"jwt": {"secret": SECRET, "issuer": "me", "audience": ["a", "b"]}},
        {"jwt_secret": SECRET, "jwt": {"issuer": "me"}},
        {"jwt_secret": SECRET, "jwt": {"secret": SECRET}},
        {"jwt": {"jwks_url": "https://idp.example/jwks.json"}},
        {"jwt": {"public_key": "-----BEGIN PUBLIC KEY-----\nMII\n-----END PUBLIC KEY-----"}},
        {"jwt": {"jwks_url": "https://idp/jwks", "algorithms": ["ES256", "EdDSA"]}},
    ],
)
def test_auth_with_good_key(top: dict[str, Any]) -> None:
    cfg = load_config(config(route(auth_required=True), **top))
    assert cfg.effective_jwt() is not None


def test_weak_secret_is_fine_without_protected_routes() -> None:
    load_config(config(jwt_secret="short"))


@pytest.mark.parametrize(
    ("jwt", "fragment"),
    [
        ({}, "give exactly one of secret, public_key or jwks_url (given: none)"),
        ({"secret": SECRET, "jwks_url": "https://x"}, "(given: secret, jwks_url)"),
        ({"secret": SECRET, "algorithms": ["RS256"]}, "RS256 need public_key or jwks_url"),
        ({"jwks_url": "https://x", "algorithms": ["HS256"]}, "HS256 need secret"),
        ({"secret": SECRET, "algorithms": ["none"]}, "'none' is never allowed"),
        ({"secret": SECRET, "algorithms": ["HS999"]}, "algorithms[0]: must be one of: HS256"),
        ({"secret": SECRET, "algorithms": []}, "must not be empty"),
        ({"jwks_url": "ftp://x"}, "jwt.jwks_url: must be an http:// or https:// URL"),
        ({"public_key": "abc"}, "must be a PEM-encoded public key"),
        ({"secret": SECRET, "leeway_s": 4000}, "leeway_s: must be between 0 and 3600"),
        ({"secret": SECRET, "audience": 5}, "audience: must be a string or a list of strings"),
    ],
)
def test_jwt_block_errors(jwt: dict[str, Any], fragment: str) -> None:
    (error,) = errors_of(config(jwt=jwt))
    assert fragment in error
    assert SECRET not in error


@pytest.mark.parametrize(
    ("jwt", "algorithms"),
    [
        ({"secret": SECRET}, ["HS256"]),
        ({"jwks_url": "https://idp/jwks"}, ["RS256"]),
        ({"secret": SECRET, "algorithms": ["HS512"]}, ["HS512"]),
    ],
)
def test_jwt_default_algorithms(jwt: dict[str, Any], algorithms: list[str]) -> None:
    cfg = load_config(config(jwt=jwt))
    assert cfg.jwt is not None
    assert cfg.jwt.algorithms == algorithms


@pytest.mark.parametrize(
    ("rate_limit", "expected"),
    [
        (
            {"algorithm": "token_bucket", "requests_per_second": 10, "burst_size": 20},
            {
                "algorithm": "token_bucket",
                "requests_per_second": 10.0,
                "burst_size": 20,
                "key": "ip",
                "backend": "memory",
            },
        ),
        (
            {
                "window_type": "SlidingWindow",
                "strategy": "PerUserAndRoute",
                "requests_per_window": 100,
                "window_duration": 60,
                "burst_allowance": 5,
                "enable_redis": True,
                "redis_url": "redis://localhost:6379",
                "redis_key_prefix": "rl:",
            },
            {
                "algorithm": "sliding_window",
                "key": "user_route",
                "requests_per_window": 100,
                "window_seconds": 60.0,
                "burst_size": 5,
                "backend": "redis",
                "key_prefix": "rl:",
            },
        ),
        (
            {
                "window_type": "FixedWindow",
                "strategy": "PerIP",
                "requests_per_window": 1,
                "window_duration": 1,
                "enable_redis": False,
            },
            {"algorithm": "fixed_window", "key": "ip", "backend": "memory"},
        ),
        (
            {"requests_per_second": 1, "key": "header:X-Api-Key"},
            {"key": "header:X-Api-Key"},
        ),
    ],
)
def test_rate_limit_shapes(rate_limit: dict[str, Any], expected: dict[str, Any]) -> None:
    cfg = load_config(config(rate_limit=rate_limit))
    assert cfg.rate_limit is not None
    dumped = cfg.rate_limit.model_dump()
    assert {k: dumped[k] for k in expected} == expected


@pytest.mark.parametrize(
    ("rate_limit", "fragment"),
    [
        ({}, "give either requests_per_second, or both requests_per_window and window_seconds"),
        ({"requests_per_window": 5}, "or both requests_per_window and window_seconds"),
        ({"requests_per_second": 1, "window_seconds": 1}, "not both"),
        ({"requests_per_second": 0}, "rate_limit.requests_per_second: must be > 0"),
        ({"requests_per_second": 1, "burst_size": -1}, "burst_size: must be >= 0"),
        (
            {"requests_per_second": 1, "algorithm": "leaky"},
            "must be one of: fixed_window, sliding_window, token_bucket",
        ),
        (
            {"requests_per_second": 1, "strategy": {"Composite": ["PerIP"]}},
            "Composite strategy is not supported",
        ),
        (
            {"requests_per_second": 1, "key": "cookie"},
            "must be one of: ip, user, route, ip_route, user_route, or header:<name>",
        ),
        ({"requests_per_second": 1, "backend": "redis"}, "backend 'redis' needs redis_url"),
        (
            {
                "requests_per_second": 1,
                "enable_redis": False,
                "backend": "redis",
                "redis_url": "redis://x",
            },
            "contradicts backend",
        ),
        ({"requests_per_second": 1, "redis_url": "http://x"}, "must be a redis://"),
        (
            {"requests_per_second": 1, "burst_size": 1, "burst_allowance": 1},
            "'burst_size' and 'burst_allowance' are the same setting",
        ),
    ],
)
def test_rate_limit_errors(rate_limit: dict[str, Any], fragment: str) -> None:
    (error,) = errors_of(config(rate_limit=rate_limit))
    assert error.startswith("rate_limit")
    assert fragment in error


def test_all_errors_reported_at_once() -> None:
    data = config(
        route(backends=[{"host": "ws://a", "port": 0}], methods=["FETCH"], typo=1),
        version=0,
    )
    errors = errors_of(data)
    assert [e.split(":")[0] for e in errors] == [
        "version",
        "routers[0].methods[0]",
        "routers[0].backends[0].host",
        "routers[0].backends[0].port",
        "routers[0].typo",
    ]


def test_secret_values_never_reported() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(config(jwt_secret=12345, rate_limit={"requests_per_second": 1, "redis_url": 5}))
    for error in info.value.errors:
        assert "value" not in error.as_dict()


def full_config() -> dict[str, Any]:
    return config(
        route(auth_required=True, retry={"max_retries": 2}, timeouts={"read_ms": 100}),
        route(
            external_path="/static/{*path}",
            internal_path="/{*path}",
            methods=["get", "head"],
            backends=[{"host": "https://cdn", "port": 443, "weight": 3, "tls_ca_file": "/ca.pem"}],
            load_balancing_strategy="weighted",
        ),
        jwt={"secret": SECRET, "issuer": "kairos", "audience": "api", "required_claims": ["sub"]},
        rate_limit={
            "requests_per_second": 5,
            "backend": "redis",
            "redis_url": "redis://:pw@redis:6379/0",
        },
        trusted_proxies=["10.0.0.0/8", "::1"],
        timeouts={"connect_ms": 1000},
    )


def test_json_round_trip_keeps_secrets_in_clear() -> None:
    cfg = load_config(full_config())
    text = config_to_json(cfg)
    assert SECRET in text
    assert "redis://:pw@redis" in text
    again = load_config(json.loads(text))
    assert again == cfg
    assert config_to_json(again) == text


def test_canonical_names_are_written() -> None:
    data = full_config()
    text = config_to_json(load_config(data))
    assert '"retry_config"' in text
    assert '"retry"' not in text


def test_redacted_hides_secrets() -> None:
    data = full_config()
    data["jwt_secret"] = SECRET
    dumped = redacted(load_config(data))
    text = json.dumps(dumped)
    assert SECRET not in text
    assert ":pw@" not in text
    assert dumped["jwt_secret"] == "***"
    assert dumped["jwt"]["secret"] == "***"
    assert dumped["rate_limit"]["redis_url"] == "redis://:***@redis:6379/0"
    assert dumped["trusted_proxies"] == ["10.0.0.0/8", "::1/128"]


def test_load_does_not_mutate_input() -> None:
    data = full_config()
    legacy = route(host="http://a", port=1)
    del legacy["backends"]
    data["routers"].append(legacy | {"external_path": "/legacy/{id}"})
    data["rate_limit"] = {"requests_per_second": 1, "enable_redis": True, "redis_url": "redis://r"}
    before = copy.deepcopy(data)
    load_config(data)
    assert data == before


@pytest.mark.parametrize(
    ("own", "effective"),
    [
        (None, Timeouts(connect_ms=1000, read_ms=2000)),
        (RouteTimeouts(read_ms=50), Timeouts(connect_ms=1000, read_ms=50)),
        (RouteTimeouts(connect_ms=7, read_ms=8), Timeouts(connect_ms=7, read_ms=8)),
    ],
)
def test_effective_timeouts(own: RouteTimeouts | None, effective: Timeouts) -> None:
    data = route() if own is None else route(timeouts=own.model_dump(exclude_none=True))
    cfg = load_config(config(data, timeouts={"connect_ms": 1000, "read_ms": 2000}))
    assert effective_timeouts(cfg.routers[0], cfg.timeouts) == effective


def test_models_are_frozen() -> None:
    cfg = load_config(config())
    with pytest.raises(ValueError, match="frozen"):
        cfg.version = 2  # type: ignore[misc]


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b'{"version": 1,\n "routers": [}', "invalid JSON at line 2, column 14"),
        (b"", "invalid JSON at line 1, column 1"),
        (b'{"routers": [], "routers": []}', "duplicate key 'routers'"),
        (b'\xff{"routers": []}', "not UTF-8"),
        (b"[]", "must be a JSON object"),
    ],
)
def test_load_config_file_errors(tmp_path: Path, content: bytes, fragment: str) -> None:
    path = tmp_path / "config.json"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        load_config_file(path)
    (error,) = info.value.errors
    assert error.loc == ()
    assert fragment in error.message


def test_load_config_file_missing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config_file(tmp_path / "absent.json")


def test_load_config_file_too_large(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_bytes(b" " * (10 * 1024 * 1024) + b'{"routers": []}')
    with pytest.raises(ConfigError, match="larger than"):
        load_config_file(path)


def test_load_config_file_ok(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(config_to_json(load_config(full_config())))
    assert isinstance(load_config_file(str(path)), GatewayConfig)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (route(), None),
        (route(backends=[{"host": "http://a", "port": 0}]), "backends[0].port: must be between"),
        (route(methos=["GET"]), "methos: unknown field; did you mean 'methods'?"),
        ("x", "a route must be a JSON object"),
    ],
)
def test_load_router(data: object, expected: str | None) -> None:
    if expected is None:
        assert load_router(data).external_path == "/users/{id}"
        return
    with pytest.raises(ConfigError) as info:
        load_router(data)
    assert [expected in str(e) for e in info.value.errors] == [True]
