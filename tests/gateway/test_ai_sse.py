"""The event-stream reader the ai plugin relays provider streams with: every way a
stream can be cut into reads gives the same events, CR, LF and CRLF line ends alike,
and a line without end is bounded."""

from __future__ import annotations

import pytest
from kairos_gateway.ai.sse import SseReader, SseTooLong

STREAM = b'data: {"a":1}\n\nevent: x\ndata: 2\ndata: 3\n\n: comment\n\nid: 7\ndata: [DONE]\n\n'
EXPECTED = [("message", '{"a":1}'), ("x", "2\n3"), ("message", "[DONE]")]


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
def test_every_split_gives_the_same_events(newline: bytes) -> None:
    stream = STREAM.replace(b"\n", newline)
    for cut in range(len(stream) + 1):
        for second in range(cut, len(stream) + 1, 7):
            reader = SseReader()
            events = [
                *reader.feed(stream[:cut]),
                *reader.feed(stream[cut:second]),
                *reader.feed(stream[second:]),
                *reader.finish(),
            ]
            assert [(e.event, e.data) for e in events] == EXPECTED, (cut, second)


def test_a_plain_data_event_is_passed_on_as_received() -> None:
    [event] = SseReader().feed(b'data: {"x": 1}\n\n')
    assert event.raw == b'data: {"x": 1}\n\n'


def test_an_endless_line_is_refused() -> None:
    reader = SseReader(max_line=1024)
    reader.feed(b"data: " + b"x" * 1000)
    with pytest.raises(SseTooLong):
        reader.feed(b"x" * 100)
