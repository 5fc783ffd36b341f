"""Sending spans: a bounded queue, batches encoded and POSTed from a background thread.

The event loop hands each finished span as a record (a tuple whose first item encodes
it, see `spans`) to `SpanExport.add`: an append to a deque, nothing else unless a batch
is full (then one `Event.set` wakes the thread). The thread encodes and sends full
batches of ``max_batch`` when woken, and what is waiting every ``interval_s``; each
batch is one OTLP/HTTP POST (`OtlpHttpSender`). Beyond ``max_queue`` waiting spans new
ones are dropped and counted (a slow or absent collector never holds requests up), and
the thread logs how many. `SpanExport.shutdown` sends what is still waiting, within
the export timeout.

Encoding a batch in one go keeps the event loop's part of a span to filling a tuple,
and runs the encoder's code hot, 512 spans at a time, instead of between requests.
"""

from __future__ import annotations

import logging
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Mapping
from http.client import HTTPException
from typing import Any

from .otlp import export_request

__all__ = ["OtlpHttpSender", "SpanExport"]

log = logging.getLogger("kairos.gateway")

#: A streak of failed exports, or of dropped spans, is logged once a minute.
_LOG_EVERY_S = 60.0


class OtlpHttpSender:
    """POSTs batches of spans to an OTLP/HTTP traces endpoint (protobuf)."""

    def __init__(
        self,
        endpoint: str,
        *,
        resource: bytes,
        scope: bytes,
        headers: Mapping[str, str],
        timeout_s: float,
    ) -> None:
        self._endpoint = endpoint
        self._resource = resource
        self._scope = scope
        self._headers = {"Content-Type": "application/x-protobuf", **headers}
        self._timeout_s = timeout_s
        self._failing_since = 0.0

    def send(self, spans: list[bytes]) -> bool:
        """One ``ExportTraceServiceRequest`` of encoded ``spans``; False when it failed (the
        spans are dropped: logged at the start of a streak, then once a minute)."""
        data = export_request(spans, self._resource, self._scope)
        request = urllib.request.Request(  # noqa: S310 (the configured http(s) endpoint)
            self._endpoint, data=data, headers=self._headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=self._timeout_s) as response:  # noqa: S310
                response.read()
        except (OSError, HTTPException, ValueError) as exc:
            self._failed(len(spans), exc)
            return False
        if self._failing_since:
            self._failing_since = 0.0
            log.info("span export works again", extra={"fields": {"endpoint": self._endpoint}})
        return True

    def _failed(self, count: int, exc: BaseException) -> None:
        now = time.monotonic()
        if self._failing_since and now - self._failing_since < _LOG_EVERY_S:
            return
        self._failing_since = now
        reason = f"HTTP {exc.code}" if isinstance(exc, urllib.error.HTTPError) else str(exc)
        log.warning(
            "span export failed; spans dropped",
            extra={"fields": {"endpoint": self._endpoint, "spans": count, "error": reason}},
        )


class SpanExport:
    """The process's queue of finished spans and the thread that sends them."""

    def __init__(
        self,
        sender: OtlpHttpSender,
        *,
        max_queue: int,
        max_batch: int,
        interval_s: float,
        timeout_s: float,
    ) -> None:
        self._sender = sender
        self._queue: deque[tuple[Any, ...]] = deque()
        self._max_queue = max_queue
        self._max_batch = max_batch
        self._interval_s = interval_s
        self._timeout_s = timeout_s
        self._wake = threading.Event()
        self._closing = False
        #: Spans dropped because the queue was full (counted by `add`, reported by the
        #: thread).
        self.dropped = 0
        self._reported = 0
        self._reported_at = 0.0
        self._thread = threading.Thread(target=self._run, name="kairos-span-export", daemon=True)
        self._thread.start()

    def add(self, record: tuple[Any, ...]) -> None:
        """Queue one span's record (called on the event loop; never blocks)."""
        queue = self._queue
        waiting = len(queue)
        if waiting >= self._max_queue:
            self.dropped += 1
            return
        queue.append(record)
        if waiting + 1 >= self._max_batch and not self._wake.is_set():
            self._wake.set()

    def shutdown(self) -> None:
        """Send what is waiting (within the export timeout), then stop the thread."""
        self._closing = True
        self._wake.set()
        self._thread.join(self._timeout_s)

    def _run(self) -> None:
        while True:
            woken = self._wake.wait(self._interval_s)
            self._wake.clear()
            closing = self._closing
            # Woken by a full batch: full batches only (what arrives while one is sent
            # waits for the next batch or the interval, not a POST of its own).
            self._send_waiting(everything=closing or not woken)
            if self.dropped != self._reported:
                self._report_dropped()
            if closing:
                return

    def _send_waiting(self, *, everything: bool) -> None:
        queue = self._queue
        popleft = queue.popleft
        batch = self._max_batch
        while len(queue) >= batch or (everything and queue):
            records = [popleft() for _ in range(min(len(queue), batch))]
            try:
                self._sender.send([record[0](record) for record in records])
            except Exception:  # a bug (the sender catches I/O errors): keep the thread
                log.exception("span export failed unexpectedly; spans dropped")

    def _report_dropped(self) -> None:
        now = time.monotonic()
        if self._reported_at and now - self._reported_at < _LOG_EVERY_S:
            return
        dropped, self._reported, self._reported_at = (
            self.dropped - self._reported,
            self.dropped,
            now,
        )
        log.warning(
            "span queue full; spans dropped",
            extra={"fields": {"spans": dropped, "max_queue": self._max_queue}},
        )
