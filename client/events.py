"""Server-Sent Events parsing, as the HTML standard's event-stream interpretation describes it.

Only what a client needs from the wire: events with their id, name and data,
and the server's `retry` (how long to wait before reconnecting).
"""

from collections.abc import Iterable, Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class ServerSentEvent:
    event: str
    data: str
    id: str | None  # the last event id seen so far in the stream, as the standard defines it


@dataclass
class Retry:
    """The reconnection delay the stream asked for, in seconds (updated while parsing)."""

    seconds: float = 1.0


def parse(lines: Iterable[str], retry: Retry) -> Iterator[ServerSentEvent]:
    """Yield the events of a stream given line by line (without line endings); comments are skipped."""
    event, data, last_id = "", [], None
    for line in lines:
        if not line:
            if data:
                yield ServerSentEvent(event or "message", "\n".join(data), last_id)
            event, data = "", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
        elif name == "id" and "\0" not in value:
            last_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            retry.seconds = int(value) / 1000
