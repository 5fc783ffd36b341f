"""The audit trail, kept versions and rollback through the client."""

from __future__ import annotations

import pytest
from kairos_client import Forbidden, NotFound, PreconditionFailed

from tests.client.support import client_for
from tests.conftest import GatewayFactory
from tests.support import EchoBackend, route

OPERATOR = "operator-token-0123456789"
VIEWER = "viewer-token-0123456789"


async def test_audit_versions_and_rollback(
    backend: EchoBackend, file_gateway_factory: GatewayFactory
) -> None:
    gw = await file_gateway_factory(
        {
            "version": 1,
            "routers": [route("/a", "/a", [backend], methods=["GET"])],
            "admin": {
                "tokens": [
                    {"name": "ci", "token": OPERATOR, "role": "operator"},
                    {"name": "grafana", "token": VIEWER, "role": "viewer"},
                ]
            },
        }
    )
    async with client_for(gw, token=OPERATOR) as client, client_for(gw, token=VIEWER) as viewer:
        [start] = (await client.config_versions()).versions
        for name in ("b", "c"):
            await client.create_route(route(f"/{name}", "/x", [backend], methods=["GET"]))
        page = await viewer.audit(limit=1)
        assert [e.id for e in page.entries] == [2]
        assert page.entries[0].actor == "ci"
        assert page.entries[0].changes[0].route == "GET /c"
        assert page.entries[0].changes[0].setting is None
        older = await viewer.audit(limit=1, before=page.next)
        assert [e.id for e in older.entries] == [1]
        assert older.next is None

        with pytest.raises(Forbidden):
            await viewer.rollback(start.version)
        with pytest.raises(PreconditionFailed):
            await client.rollback(start.version, if_match='"stale"')
        with pytest.raises(NotFound):
            await client.rollback("0123abcd")
        result = await client.rollback(start.version)
        assert result.restored == result.version == start.version
        routes = await viewer.list_routes()
        assert [r.external_path for r in routes.value.routes] == ["/a"]
        newest = (await viewer.audit(limit=1)).entries[0]
        assert (newest.actor, newest.trigger) == ("ci", "rollback")
