import pytest
from kairos_core import (
    ABSENT,
    BadRequest,
    ConfigError,
    FieldError,
    InvalidPath,
    KairosError,
    MethodNotAllowed,
    RouteNotFound,
    ServiceUnavailable,
    UpstreamError,
    UpstreamTimeout,
)


@pytest.mark.parametrize(
    ("cls", "parent", "status", "type_"),
    [
        (KairosError, Exception, 500, "internal_error"),
        (BadRequest, KairosError, 400, "bad_request"),
        (InvalidPath, BadRequest, 400, "invalid_path"),
        (RouteNotFound, KairosError, 404, "route_not_found"),
        (MethodNotAllowed, KairosError, 405, "method_not_allowed"),
        (UpstreamError, KairosError, 502, "upstream_error"),
        (ServiceUnavailable, KairosError, 503, "service_unavailable"),
        (UpstreamTimeout, KairosError, 504, "upstream_timeout"),
        (ConfigError, KairosError, 422, "invalid_config"),
    ],
)
def test_error_tree(cls: type[KairosError], parent: type, status: int, type_: str) -> None:
    assert cls.__mro__[1] is parent
    assert (cls.status, cls.type) == (status, type_)
    assert cls.title


def test_detail_defaults_to_title() -> None:
    assert RouteNotFound().detail == "Route not found"
    assert str(RouteNotFound("no route for /x")) == "no route for /x"


def test_method_not_allowed_carries_allow() -> None:
    assert MethodNotAllowed(allow=["GET", "POST"]).allow == frozenset({"GET", "POST"})


@pytest.mark.parametrize(
    ("loc", "path"),
    [
        ((), ""),
        (("version",), "version"),
        (("routers", 0, "backends", 1, "port"), "routers[0].backends[1].port"),
        (("trusted_proxies", 2), "trusted_proxies[2]"),
    ],
)
def test_field_error_path(loc: tuple[str | int, ...], path: str) -> None:
    assert FieldError(loc, "m").path == path


@pytest.mark.parametrize(
    ("error", "text", "as_dict"),
    [
        (
            FieldError(("routers", 0, "backends", 1, "port"), "must be between 1 and 65535", 0),
            "routers[0].backends[1].port: must be between 1 and 65535 (got 0)",
            {
                "path": "routers[0].backends[1].port",
                "message": "must be between 1 and 65535",
                "value": 0,
            },
        ),
        (
            FieldError(("jwt_secret",), "is too short"),
            "jwt_secret: is too short",
            {"path": "jwt_secret", "message": "is too short"},
        ),
        (
            FieldError((), "invalid JSON", ABSENT),
            "invalid JSON",
            {"path": "", "message": "invalid JSON"},
        ),
        (
            FieldError(("x",), "bad", None),
            "x: bad (got null)",
            {"path": "x", "message": "bad", "value": None},
        ),
        (
            FieldError(("x",), "bad", float("nan")),
            'x: bad (got "nan")',
            {"path": "x", "message": "bad", "value": "nan"},
        ),
    ],
)
def test_field_error_rendering(error: FieldError, text: str, as_dict: dict[str, object]) -> None:
    assert str(error) == text
    assert error.as_dict() == as_dict


def test_config_error_lists_every_error() -> None:
    errors = [FieldError(("a",), "one"), FieldError(("b", 0), "two")]
    exc = ConfigError(errors)
    assert exc.errors == errors
    assert str(exc).splitlines() == ["2 configuration errors:", "  a: one", "  b[0]: two"]
