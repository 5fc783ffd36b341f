"""A small backend to try Kairos with: echoes each request as JSON (HEAD: the same
headers, no body).

    uv run python examples/demo_backend.py            # listens on 127.0.0.1:8081
    uv run python examples/demo_backend.py 8082       # a second one for round robin

Then, with the gateway running on examples/config.json:

    curl http://localhost:5900/api/users/42
"""

from __future__ import annotations

import asyncio
import json
import sys

from tornado import web


class Echo(web.RequestHandler):
    SUPPORTED_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH")

    def _echo(self, *_: str) -> None:
        self.set_header("Content-Type", "application/json")
        body = {
            "backend_port": self.settings["port"],
            "method": self.request.method,
            "uri": self.request.uri,
            "host_header": self.request.host,
            "headers": dict(self.request.headers),
            "body": self.request.body.decode("utf-8", "replace"),
        }
        self.write(json.dumps(body, indent=2) + "\n")

    get = head = post = put = delete = patch = _echo


async def main(port: int) -> None:
    app = web.Application([(r"/.*", Echo)], port=port)
    app.listen(port, "127.0.0.1")
    print(f"demo backend on http://127.0.0.1:{port}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 8081))
