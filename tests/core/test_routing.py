from typing import Any

import pytest
from kairos_core import (
    BadPath,
    ConfigError,
    Match,
    MethodNotAllowedResult,
    NoRoute,
    Router,
    RouteTable,
    load_config,
)


def make(external: str, internal: str | None = None, methods: tuple[str, ...] = ("GET",)) -> Router:
    return Router.model_validate(
        {
            "external_path": external,
            "internal_path": internal if internal is not None else external,
            "methods": list(methods),
            "backends": [{"host": "http://b", "port": 80}],
        }
    )


def table(*routes: Router) -> RouteTable:
    return RouteTable(routes)


CATS = table(
    make("/cats", "/all-cats"),
    make("/cats/{id}", "/{id}"),
    make("/cats/{id}/toys/{toy}", "/toys/{toy}/of/{id}"),
    make("/cats/search", "/search"),
    make("/static/{*path}", "/assets/{*path}"),
    make("/static/special", "/special"),
    make("/", "/root"),
    make("/users/", "/users-slash"),
)


@pytest.mark.parametrize(
    ("path", "template", "params", "upstream"),
    [
        ("/cats", "/cats", {}, "/all-cats"),
        ("/cats/search", "/cats/search", {}, "/search"),  # static beats {id}
        ("/cats/7", "/cats/{id}", {"id": "7"}, "/7"),
        ("/cats/test%20space", "/cats/{id}", {"id": "test%20space"}, "/test%20space"),
        (
            "/cats/7/toys/ball",
            "/cats/{id}/toys/{toy}",
            {"id": "7", "toy": "ball"},
            "/toys/ball/of/7",
        ),
        ("/static/a", "/static/{*path}", {"path": "a"}, "/assets/a"),
        ("/static/a/b/c.css", "/static/{*path}", {"path": "a/b/c.css"}, "/assets/a/b/c.css"),
        ("/static/a/", "/static/{*path}", {"path": "a/"}, "/assets/a/"),
        ("/static/special", "/static/special", {}, "/special"),
        ("/", "/", {}, "/root"),
        ("/users/", "/users/", {}, "/users-slash"),
        ("/files/a.b", None, None, None),
    ],
)
def test_match(
    path: str, template: str | None, params: dict[str, str] | None, upstream: str | None
) -> None:
    result = CATS.match("GET", path)
    if template is None:
        assert result == NoRoute()
        return
    assert isinstance(result, Match)
    assert (result.route.template, dict(result.params), result.upstream_path) == (
        template,
        params,
        upstream,
    )
    assert result.route.render(result.params) == upstream


@pytest.mark.parametrize(
    "path",
    [
        "",
        "cats",
        "/cats/",  # no trailing-slash normalisation
        "/cats/7/",
        "/cats//toys/x",
        "/static",
        "/static/",
        "/users",
        "/dogs",
        "*",
    ],
)
def test_no_route(path: str) -> None:
    assert CATS.match("GET", path) == NoRoute()


@pytest.mark.parametrize("path", ["", "/"])
def test_empty_and_root_never_match_a_param_route(path: str) -> None:
    t = table(make("/{x}", "/{x}"), make("/{*rest}", "/{*rest}", methods=("POST",)))
    assert t.match("GET", path) == NoRoute()
    assert t.match("POST", path) == NoRoute()


@pytest.mark.parametrize(
    "path",
    [
        "/files/..",
        "/files/.",
        "/files/%2e%2e",
        "/files/%2E%2e/x",
        "/files/..%2fetc",
        "/files/..%2Fetc",
        "/files/..%5cetc",
        "/files/..\\etc",
        "/files/%252e%252e",
        "/files/%25252e%25252e",
        "/static/a/../../etc",
        "/static/a/%2e/b",
        "/..",
    ],
)
def test_dot_segments_are_bad_paths(path: str) -> None:
    t = table(make("/files/{name}", "/f/{name}"), make("/static/{*path}", "/s/{*path}"))
    assert isinstance(t.match("GET", path), BadPath)


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/files/..;x/etc", "'.' or '..' segment"),  # Tomcat/Spring drop ;x: ".."
        ("/static/a/..;jsessionid=1/b", "'.' or '..' segment"),
        ("/static/a/.;x/b", "'.' or '..' segment"),
        ("/static/a/%2e%2e;x/b", "'.' or '..' segment"),
        ("/files/a%00.txt", "NUL byte"),
        ("/files/%2500", "NUL byte"),
        ("/static/%c0%ae%c0%ae/etc", "overlong UTF-8"),
        ("/static/%e0%80%ae%e0%80%ae/etc", "overlong UTF-8"),
        ("/static/%C0%AF", "overlong UTF-8"),
        ("/static/%u002e%u002e/etc", "%u escape"),
        ("/files/%2525252e", "too many times"),
    ],
)
def test_hostile_encodings_are_bad_paths(path: str, reason: str) -> None:
    t = table(make("/files/{name}", "/f/{name}"), make("/static/{*path}", "/s/{*path}"))
    result = t.match("GET", path)
    assert isinstance(result, BadPath)
    assert reason in result.reason


@pytest.mark.parametrize("name", ["a;v=1", "..a;b", "%c3%a9t%c3%a9", "%e0%a0%80", "a%3bb"])
def test_path_parameters_and_valid_utf8_are_fine(name: str) -> None:
    t = table(make("/files/{name}", "/f/{name}"))
    assert isinstance(t.match("GET", f"/files/{name}"), Match)


@pytest.mark.parametrize("name", ["a.b", "..a", "a..", ".hidden", "a%2eb", "%2e%2ex"])
def test_dots_inside_a_segment_are_fine(name: str) -> None:
    t = table(make("/files/{name}", "/f/{name}"))
    result = t.match("GET", f"/files/{name}")
    assert isinstance(result, Match)
    assert result.upstream_path == f"/f/{name}"


@pytest.mark.parametrize(
    ("routes", "method", "path", "allow"),
    [
        ([make("/a", methods=("GET", "HEAD"))], "POST", "/a", {"GET", "HEAD"}),
        (
            [make("/a/{x}", methods=("GET",)), make("/a/{*r}", "/{*r}", methods=("PUT",))],
            "POST",
            "/a/1",
            {"GET", "PUT"},
        ),
        (
            [make("/a/b", methods=("GET",)), make("/a/{x}", "/x", methods=("PATCH",))],
            "POST",
            "/a/b",
            {"GET", "PATCH"},
        ),
        (
            [make("/a", methods=("GET",)), make("/a", methods=("DELETE",))],
            "POST",
            "/a",
            {"GET", "DELETE"},
        ),
    ],
)
def test_method_not_allowed(routes: list[Router], method: str, path: str, allow: set[str]) -> None:
    assert table(*routes).match(method, path) == MethodNotAllowedResult(frozenset(allow))


@pytest.mark.parametrize(
    ("routes", "method", "path", "winner"),
    [
        # static beats any dynamic route
        (["/a/b", "/a/{x}", "/{x}/{y}", "/a/{*r}"], "GET", "/a/b", "/a/b"),
        # more literal segments beat fewer, wherever they are
        (["/p/{b}/{c}", "/{a}/x/y"], "GET", "/p/x/y", "/{a}/x/y"),
        # same literal count: left to right, literal > param > tail
        (["/{x}/b", "/a/{y}"], "GET", "/a/b", "/a/{y}"),
        (["/a/{x}", "/a/{*rest}"], "GET", "/a/b", "/a/{x}"),
        (["/{x}/b/c", "/a/{*rest}"], "GET", "/a/b/c", "/{x}/b/c"),
        (["/{x}/{y}", "/{*rest}"], "GET", "/a/b", "/{x}/{y}"),
        (["/a/{*rest}", "/{*rest}"], "GET", "/a/b", "/a/{*rest}"),
        (["/a/{*rest}", "/{*rest}"], "GET", "/b/c", "/{*rest}"),
        (["/api/{*rest}", "/api/v1/{x}"], "GET", "/api/v1/z", "/api/v1/{x}"),
        (["/api/{*rest}", "/api/v1/{x}"], "GET", "/api/v1/z/w", "/api/{*rest}"),
    ],
)
def test_precedence(routes: list[str], method: str, path: str, winner: str) -> None:
    compiled = [make(r, "/" if "{" not in r else r) for r in routes]
    result = table(*compiled).match(method, path)
    assert isinstance(result, Match)
    assert result.route.template == winner


def test_lower_ranked_route_that_allows_the_method_wins() -> None:
    t = table(make("/a/b", "/static", methods=("GET",)), make("/a/{x}", "/{x}", methods=("POST",)))
    result = t.match("POST", "/a/b")
    assert isinstance(result, Match)
    assert result.route.template == "/a/{x}"
    assert result.upstream_path == "/b"


def test_same_pattern_disjoint_methods() -> None:
    t = table(make("/u/{id}", "/read/{id}", ("GET",)), make("/u/{uid}", "/write/{uid}", ("PUT",)))
    result = t.match("PUT", "/u/9")
    assert isinstance(result, Match)
    assert (result.route.index, dict(result.params), result.upstream_path) == (
        1,
        {"uid": "9"},
        "/write/9",
    )


@pytest.mark.parametrize(
    ("routes", "fragment"),
    [
        (
            [make("/u/{id}"), make("/u/{uid}", "/x")],
            "routers[1].external_path: routers[0] and routers[1] both route GET",
        ),
        ([make("/a"), make("/a", "/b")], "both route GET '/a'"),
        (
            [make("/a", methods=("GET", "POST")), make("/a", "/b", methods=("POST",))],
            "both route POST",
        ),
    ],
)
def test_duplicates_refused(routes: list[Router], fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        RouteTable(routes)
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("external_path", "/users/{user_id", "routers[0].external_path: unbalanced braces"),
        ("external_path", "/users/{}", "has no name"),
        ("external_path", "/users/{1x}", "is not an identifier"),
        ("external_path", "/health", "reserved path"),
        ("internal_path", "/x/{nope}", "routers[0].internal_path: placeholder 'nope'"),
    ],
)
def test_malformed_routes_refused_even_when_built_without_validation(
    field: str, value: str, fragment: str
) -> None:
    fields: dict[str, Any] = make("/u/{id}", "/u/{id}").model_dump()
    fields[field] = value
    with pytest.raises(ConfigError) as info:
        RouteTable([Router.model_construct(**fields)])
    assert fragment in str(info.value)


def test_table_is_a_sized_iterable_of_compiled_routes() -> None:
    routes = [make("/a"), make("/b/{x}", "/{x}", ("GET", "POST"))]
    t = RouteTable(routes)
    assert len(t) == 2
    compiled = list(t)
    assert [c.index for c in compiled] == [0, 1]
    assert [c.config for c in compiled] == routes
    assert compiled[1].methods == frozenset({"GET", "POST"})
    assert compiled[1].render({"x": "y"}) == "/y"


def test_empty_table() -> None:
    t = RouteTable([])
    assert len(t) == 0
    assert t.match("GET", "/") == NoRoute()


def test_ten_thousand_dynamic_routes() -> None:
    n = 10_000
    routes = [make(f"/svc{i}/{{id}}/items/{{item}}", f"/v{i}/{{item}}/{{id}}") for i in range(n)]
    routes.append(make("/{a}/{b}/items/{c}", "/fallback/{a}"))
    t = RouteTable(routes)
    for i in (0, 1, 4_999, n - 1):
        result = t.match("GET", f"/svc{i}/42/items/x%20y")
        assert isinstance(result, Match)
        assert result.route.index == i
        assert result.upstream_path == f"/v{i}/x%20y/42"
    fallback = t.match("GET", f"/svc{n}/42/items/x")
    assert isinstance(fallback, Match)
    assert fallback.upstream_path == f"/fallback/svc{n}"
    assert t.match("GET", "/svc1/42/other/x") == NoRoute()
    assert t.match("POST", "/svc1/42/items/x") == MethodNotAllowedResult(frozenset({"GET"}))


@pytest.mark.parametrize(
    ("routes", "method", "path", "owner"),
    [
        (["/a"], "POST", "/a", "/a"),
        # the precedence of a match picks whose figures a refusal counts toward
        (["/a/b", "/a/{x}", "/a/{*r}"], "POST", "/a/b", "/a/b"),
        (["/a/{x}", "/a/{*r}"], "POST", "/a/1", "/a/{x}"),
        (["/{x}/b", "/a/{y}"], "POST", "/a/b", "/a/{y}"),
        (["/api/{*rest}", "/api/v1/{x}"], "DELETE", "/api/v1/z/w", "/api/{*rest}"),
    ],
)
def test_method_not_allowed_names_the_best_ranked_route(
    routes: list[str], method: str, path: str, owner: str
) -> None:
    compiled = [make(r, "/" if "{" not in r else r) for r in routes]
    t = table(*compiled)
    result = t.match(method, path)
    assert isinstance(result, MethodNotAllowedResult)
    assert result.route is not None
    assert result.route.template == owner
    # The index leads from the table's route to the snapshot's per-route runtime.
    assert list(t)[result.route.index] is result.route


def test_method_not_allowed_equality_is_the_answer_only() -> None:
    t = table(make("/a", methods=("GET",)), make("/a", methods=("DELETE",)))
    result = t.match("POST", "/a")
    assert isinstance(result, MethodNotAllowedResult)
    assert result.route is not None
    assert result.route.template == "/a"
    assert result == MethodNotAllowedResult(frozenset({"GET", "DELETE"}))


# -- route options: encoded slashes in {param} values, ';' path parameters -------------


def with_options(external: str, internal: str, **options: Any) -> Router:
    return Router.model_validate(
        {
            "external_path": external,
            "internal_path": internal,
            "methods": ["GET"],
            "backends": [{"host": "http://b", "port": 80}],
            **options,
        }
    )


@pytest.mark.parametrize("name", ["a%2Fb", "a%2fb", "a%5Cb", "a%5cb", "a%252Fb", "a\\b", "%2F"])
def test_a_param_holding_an_encoded_slash_is_refused_by_default(name: str) -> None:
    t = table(with_options("/files/{name}", "/f/{name}"))
    result = t.match("GET", f"/files/{name}")
    assert isinstance(result, BadPath)
    assert "encoded '/'" in result.reason


@pytest.mark.parametrize("name", ["a%2Fb", "a%5cb", "a%252Fb"])
def test_a_route_may_allow_encoded_slashes_in_params(name: str) -> None:
    t = table(with_options("/files/{name}", "/f/{name}", allow_encoded_slash=True))
    result = t.match("GET", f"/files/{name}")
    assert isinstance(result, Match)
    assert result.upstream_path == f"/f/{name}"  # passed on as received


def test_a_tail_may_hold_encoded_slashes() -> None:
    # {*tail} matches any number of segments: an encoded slash adds nothing it could not.
    t = table(with_options("/static/{*path}", "/s/{*path}"))
    result = t.match("GET", "/static/a%2Fb/c")
    assert isinstance(result, Match)
    assert result.upstream_path == "/s/a%2Fb/c"


@pytest.mark.parametrize("name", ["a", "a%20b", "caf%c3%a9", "a%3bb"])
def test_params_without_a_separator_are_fine(name: str) -> None:
    t = table(with_options("/files/{name}", "/f/{name}"))
    assert isinstance(t.match("GET", f"/files/{name}"), Match)


@pytest.mark.parametrize("path", ["/files/a;v=1", "/files/a;", "/static/a;x/b", "/static/b;"])
def test_semicolon_params_pass_by_default_and_a_route_may_refuse_them(path: str) -> None:
    passing = table(with_options("/files/{name}", "/f/{name}"), make("/static/{*p}", "/s/{*p}"))
    result = passing.match("GET", path)
    assert isinstance(result, Match)
    assert ";" in result.upstream_path  # passed on as received
    refusing = table(
        with_options("/files/{name}", "/f/{name}", path_params="refuse"),
        with_options("/static/{*p}", "/s/{*p}", path_params="refuse"),
    )
    refused = refusing.match("GET", path)
    assert isinstance(refused, BadPath)
    assert "';' path parameters" in refused.reason
    assert isinstance(refusing.match("GET", path.replace(";", "")), Match)


@pytest.mark.parametrize("path_params", ["pass", "refuse"])
def test_a_param_hiding_a_dot_segment_is_refused_on_every_route(path_params: str) -> None:
    t = table(with_options("/static/{*p}", "/s/{*p}", path_params=path_params))
    result = t.match("GET", "/static/a/..;x/b")
    assert isinstance(result, BadPath)
    assert "'.' or '..' segment" in result.reason


def test_path_params_takes_pass_or_refuse() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(
            {
                "routers": [
                    {
                        "external_path": "/a/{x}",
                        "internal_path": "/a/{x}",
                        "methods": ["GET"],
                        "backends": [{"host": "http://b", "port": 80}],
                        "path_params": "strip",
                    }
                ]
            }
        )
    (error,) = info.value.errors
    assert error.path == "routers[0].path_params"
