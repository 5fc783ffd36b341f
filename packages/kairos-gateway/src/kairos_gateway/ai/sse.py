"""Server-sent events, read incrementally from a provider's stream.

`SseReader.feed` takes bytes as they arrive and returns the events completed by them;
a line longer than ``max_line`` raises `SseTooLong` (a provider cannot make the gateway
hold an unbounded line). Field rules follow the HTML living standard: ``event:`` and
``data:`` (several joined by newlines), comments (``:``) skipped, CR, LF or CRLF ends a
line, a blank line ends an event.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SseEvent", "SseReader", "SseTooLong", "encode"]


class SseTooLong(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class SseEvent:
    event: str
    data: str
    #: The event as received, with its blank line, when it can be passed on as is.
    raw: bytes | None = None


class SseReader:
    __slots__ = ("_buffer", "_data", "_event", "_max_line")

    def __init__(self, *, max_line: int = 1 << 20) -> None:
        self._buffer = b""
        self._event = ""
        self._data: list[str] = []
        self._max_line = max_line

    def feed(self, chunk: bytes) -> list[SseEvent]:
        buffer = self._buffer + chunk if self._buffer else chunk
        if b"\r" not in buffer and not self._data and not self._event:
            return self._blocks(buffer)
        events: list[SseEvent] = []
        start = 0
        size = len(buffer)
        while start < size:
            cr = buffer.find(b"\r", start)
            lf = buffer.find(b"\n", start)
            if cr < 0 and lf < 0:
                break
            if cr >= 0 and (lf < 0 or cr < lf):
                if cr + 1 == size:
                    break  # a CR at the end: wait to know whether LF follows
                end, nxt = cr, cr + 2 if buffer[cr + 1 : cr + 2] == b"\n" else cr + 1
            else:
                end, nxt = lf, lf + 1
            self._line(buffer[start:end].decode("utf-8", "replace"), events)
            start = nxt
        self._buffer = buffer[start:]
        if len(self._buffer) > self._max_line:
            raise SseTooLong(f"an event-stream line is longer than {self._max_line} bytes")
        return events

    def finish(self) -> list[SseEvent]:
        """The stream ended: a CR it ended with ends a line (it was waiting for a
        possible LF). An event without its blank line is dropped, as the standard says."""
        return self.feed(b"\n") if self._buffer.endswith(b"\r") else []

    def _blocks(self, buffer: bytes) -> list[SseEvent]:
        """The common case, LF line ends only and no event half-read: whole events are
        the blocks before each blank line."""
        *blocks, rest = buffer.split(b"\n\n")
        events: list[SseEvent] = []
        for block in blocks:
            if block.startswith(b"data: ") and b"\n" not in block:
                # One data line: the usual shape, passed on as received.
                events.append(
                    SseEvent("message", block[6:].decode("utf-8", "replace"), block + b"\n\n")
                )
                continue
            for line in block.split(b"\n"):
                self._line(line.decode("utf-8", "replace"), events)
            self._line("", events)
        self._buffer = rest
        if len(rest) > self._max_line:
            raise SseTooLong(f"an event-stream event is longer than {self._max_line} bytes")
        return events

    def _line(self, line: str, events: list[SseEvent]) -> None:
        if not line:
            if self._data:
                events.append(SseEvent(self._event or "message", "\n".join(self._data)))
            self._event = ""
            self._data = []
            return
        if line.startswith(":"):
            return
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value


def encode(data: str, event: str | None = None) -> bytes:
    """One event on the wire (``data`` must hold no newline: JSON from `json.dumps`)."""
    if event is None:
        return b"data: " + data.encode() + b"\n\n"
    return b"event: " + event.encode() + b"\ndata: " + data.encode() + b"\n\n"
