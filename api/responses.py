"""JSON responses written with orjson (results are spliced in as raw JSON, never re-parsed)."""

import orjson
from flask import Response


def json_response(body: object, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status, headers=headers, mimetype="application/json")
