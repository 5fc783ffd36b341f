"""Tracing section: what trace propagation and span export cost a route.

    uv run python bench/run.py --only tracing [--duration 10] [--quick]
    uv run python bench/tracing.py [--duration 10] [--rounds 4] [--quick]

One nginx backend, one OTLP/HTTP sink (a small Python process that decodes every
export with opentelemetry-proto and counts the spans), and three gateways of the
working tree with the same route `/users/{id}`:

* **plain**: ``tracing.propagate: false`` (trace headers pass untouched, no trace id);
* **propagation**: the default (W3C trace context: a trace id per request in the access
  log, a ``traceparent`` per try upstream), nothing recorded;
* **exported**: ``exporter: otlp`` at ``sample_ratio: 1`` (a server and a client span
  per request, batched to the sink by the gateway's export thread);
* **sampled_10**: the same at ``sample_ratio: 0.1`` (for information: a common setting).

wrk -t1 -c50 in rounds alternating the order of the three (see bench/chain.py), req/s
and the gateway's CPU per request. The sink's span count is reported against the
two spans per request expected, so an exporter that dropped spans (its queue full)
shows.

Targets: propagation >= 0.97x and exported >= 0.80x the plain gateway's req/s.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from chain import _route, _summary, alternate
from procs import BenchError, Child, free_port, log, port_open, probe
from targets import BACKEND_PATH, Backend, Gateway
from wrk import INSTALL_HINT, wrk_path

TARGET_PROPAGATION = 0.97
TARGET_EXPORTED = 0.80
MODES = ("plain", "propagation", "exported", "sampled_10")

_SINK = '''"""An OTLP/HTTP traces sink: decodes each export, counts its spans into a file."""

import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

PORT, COUNT_FILE = int(sys.argv[1]), sys.argv[2]
ANSWER = ExportTraceServiceResponse().SerializeToString()
spans = 0


class Sink(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        global spans
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        message = ExportTraceServiceRequest()
        message.ParseFromString(body)
        spans += sum(len(s.spans) for r in message.resource_spans for s in r.scope_spans)
        with open(COUNT_FILE, "w") as out:
            out.write(str(spans))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(ANSWER)))
        self.end_headers()
        self.wfile.write(ANSWER)

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", PORT), Sink).serve_forever()
'''


class Sink:
    """The OTLP/HTTP sink process."""

    def __init__(self, workdir: Path, name: str) -> None:
        self.port = free_port()
        script = workdir / "otlp_sink.py"
        script.write_text(_SINK)
        self.count_file = workdir / f"{name}-spans.txt"
        argv = [sys.executable, str(script), str(self.port), str(self.count_file)]
        self.child = Child(name, argv, workdir)
        self.child.wait_until(lambda: port_open(self.port), 15, "listening")

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/traces"

    def spans(self) -> int:
        try:
            return int(self.count_file.read_text() or 0)
        except (OSError, ValueError):
            return 0

    def stop(self) -> None:
        self.child.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--quick", action="store_true", help="3 s runs, 1 round")
    parser.add_argument(
        "--modes",
        default=",".join(MODES),
        help=f"comma-separated, from {', '.join(MODES)} ('plain' is always run; "
        "'plain2', a second plain gateway, shows the spread between two processes)",
    )
    args = parser.parse_args(argv)
    modes = ["plain", *(m for m in args.modes.split(",") if m and m != "plain")]
    unknown = set(modes) - {*MODES, "plain2"}
    if unknown:
        parser.error(f"unknown modes: {', '.join(sorted(unknown))}")
    if wrk_path() is None:
        print(INSTALL_HINT, file=sys.stderr)
        return 2
    duration = 3 if args.quick else args.duration
    rounds = 1 if args.quick else args.rounds
    workdir = Path(tempfile.mkdtemp(prefix="kairos-bench-tracing-"))
    backend: Backend | None = None
    sinks: list[Sink] = []
    gateways: dict[str, Gateway] = {}
    lines: list[str] = []
    try:
        backend = Backend(workdir, name="tracing-backend")
        probe(f"http://127.0.0.1:{backend.port}{BACKEND_PATH}")
        sink, sink_10 = Sink(workdir, "sink-100"), Sink(workdir, "sink-10")
        sinks += [sink, sink_10]
        route = _route("/users/{id}", backend.port)
        tracing: dict[str, dict[str, object]] = {
            "plain": {"propagate": False},
            "plain2": {"propagate": False},
            "propagation": {},
            "exported": {
                "exporter": "otlp",
                "endpoint": sink.endpoint,
                "sample_ratio": 1.0,
                "max_queue": 65536,
            },
            "sampled_10": {
                "exporter": "otlp",
                "endpoint": sink_10.endpoint,
                "sample_ratio": 0.1,
                "max_queue": 65536,
            },
        }
        log("tracing: propagation off, propagation, spans exported at 100 % and 10 %")
        for mode in modes:
            block = tracing[mode]
            config = {"version": 1, "routers": [route], "tracing": block}
            gateways[mode] = Gateway(workdir, config, name=f"gw-{mode}")
        runs = alternate(
            {mode: (gw.url_for("/users/123"), gw.pid) for mode, gw in gateways.items()},
            duration,
            rounds,
            2 if args.quick else 3,
        )
        if "plain2" in runs:
            lines.append("a second plain gateway " + _summary(runs, "plain", "plain2", 0.97))
        if "propagation" in runs:
            lines.append(
                "propagation " + _summary(runs, "plain", "propagation", TARGET_PROPAGATION)
            )
        if "exported" in runs:
            exported = gateways.pop("exported")
            exported.stop()  # sends what is still queued
            requests = exported.access_log_lines()
            spans = sink.spans()
            lines.append("exported " + _summary(runs, "plain", "exported", TARGET_EXPORTED))
            lines.append(
                f"spans received from the 100 % gateway: {spans:,} for {requests:,} requests "
                f"({spans / max(1, 2 * requests):.1%} of 2 per request)"
            )
        if "sampled_10" in runs:
            lines.append("sampled 10 % " + _summary(runs, "plain", "sampled_10", TARGET_EXPORTED))
    except BenchError as exc:
        print(f"tracing bench failed: {exc} (work dir kept: {workdir})", file=sys.stderr)
        return 1
    finally:
        for gw in gateways.values():
            gw.stop()
        for each in sinks:
            each.stop()
        if backend is not None:
            backend.stop()
    print(f"\nTracing section (wrk -t1 -c50, {duration}s x {rounds} rounds)")
    for line in lines:
        print("  " + line)
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
