"""Transform section: what the bundled ``transform`` plugin costs a route.

    uv run python bench/run.py --only transform [--duration 10] [--quick]
    uv run python bench/transform.py [--duration 10] [--rounds 4] [--quick]

One gateway of the working tree, one nginx backend, two routes to it: `/plain/{id}`
and `/transform/{id}`, the latter with the ``transform`` plugin doing four request
header operations (set from a header template, add, remove, rename) and a path rewrite
with a capture group. wrk -t1 -c50 in rounds alternating which route goes first (see
bench/chain.py), req/s and the gateway's CPU per request.

Target: the transform route at >= 0.93x the plain route's req/s.
"""

from __future__ import annotations

import sys

from plugin_route import compare

TARGET = 0.93

TRANSFORM = {
    "name": "transform",
    "config": {
        "request": {
            "headers": {
                "set": {"X-Tenant": "${header.Host}"},
                "add": {"X-Gateway": "kairos"},
                "remove": ["User-Agent"],
                "rename": {"Accept": "X-Accept"},
            },
            "path": {"pattern": r"/users/(\d+)", "replacement": r"/v2/users/\1"},
        }
    },
}


def main(argv: list[str] | None = None) -> int:
    return compare(
        argv,
        description=__doc__.split("\n\n")[0],
        section="transform route",
        name="transform",
        plugin=TRANSFORM,
        target=TARGET,
        labels=("plain", "transform"),
    )


if __name__ == "__main__":
    sys.exit(main())
