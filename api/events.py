"""Server-Sent Events for a job: a `progress` event per epoch, then one `status` event with the finished job.

Backed by the job's Redis stream, which the worker writes: event ids are the
stream's entry ids, so a client that reconnects with Last-Event-ID resumes
exactly after the last event it saw, and a client that comes after the job
finished still gets everything, ending with the final event, at once.
"""

import re
import time
from collections.abc import Iterator

import orjson

from shared.jobstore import STREAM_BLOCK_SECONDS, JobStore

# A Redis stream id ("12" means "12-0"); 19 digits keep each part within the 64 bits Redis accepts.
EVENT_ID = re.compile(r"\d{1,19}(-\d{1,19})?")
# A quiet stream gets a comment each time a read of the job's events comes back empty. It must stay below the job
# store's BLOCKING_SOCKET_TIMEOUT_SECONDS and the client's STREAM_READ_TIMEOUT (tests/test_agreement.py checks both).
KEEPALIVE_SECONDS = STREAM_BLOCK_SECONDS


def stream(store: JobStore, job: dict, owner: str, after: str, lifetime: float) -> Iterator[bytes]:
    """Yield the job's events after event id `after` as SSE, until its status event or `lifetime` seconds."""
    deadline = time.monotonic() + lifetime
    epochs = job["progress"]["epochs"] if job["progress"] else None
    yield b"retry: 1000\n\n"
    while (remaining := deadline - time.monotonic()) > 0:
        events = store.events(job["id"], after, min(remaining, KEEPALIVE_SECONDS))
        if not events:
            yield b": keep-alive\n\n"
            continue
        progress = [event for event in events if event.type == "progress"]
        yield b"".join(_sse(e.id, "progress", {"epoch": e.epoch, "epochs": epochs, "loss": e.loss}) for e in progress)
        after = events[-1].id
        status = next((event for event in events if event.type == "status"), None)
        if status is not None:
            yield _sse(status.id, "status", store.get(job["id"], owner))
            return


def _sse(event_id: str, name: str, data: object) -> bytes:
    return b"id: %s\nevent: %s\ndata: %s\n\n" % (event_id.encode(), name.encode(), orjson.dumps(data))
