"""JSON responses written with orjson (results are spliced in as raw JSON, never re-parsed).

Every JSON body ends with a newline, as text on a terminal should (curl's output would run into the prompt).
"""

import orjson
from flask import Response


def json_bytes(body: object) -> bytes:
    return orjson.dumps(body, option=orjson.OPT_APPEND_NEWLINE)


def json_response(body: object, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json_bytes(body), status, headers=headers, mimetype="application/json")
