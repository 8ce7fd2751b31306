"""What a 1024 x 1024 .npy job cannot do without under convq's design, and nothing else: the floor of its time.

The body comes in over HTTP and goes into the bulk Redis (a request's arrays are
stored before it is answered) and out again (the worker reads them); the result
goes in (the worker stores it) and out (the API reads it), and back over HTTP. No
parsing, no queue, no job state, no computation. `make bench` runs it with
`gunicorn bench.floor:api` beside convq, on convq's bulk Redis (BENCH_BULK_REDIS_URL).
"""

import os

from flask import Flask, Response, request

from shared.redis_clients import from_url

bulk = from_url(os.environ["BENCH_BULK_REDIS_URL"])
api = Flask(__name__)


@api.post("/bytes")
def move_bytes() -> Response:
    bulk.set("bench:floor:request", request.get_data(), ex=60)
    arrays = bulk.get("bench:floor:request")
    bulk.set("bench:floor:result", arrays, ex=60)
    return Response(bulk.get("bench:floor:result"), mimetype="application/octet-stream")
