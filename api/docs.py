"""Self-description: GET /openapi.json, and interactive documentation at /docs that works offline."""

from pathlib import Path

from flask import Blueprint, Response, current_app, send_from_directory

from api import openapi
from api.responses import json_response
from api.runtime import runtime

bp = Blueprint("docs", __name__, static_folder="static", static_url_path="/static")

DOCS_PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>convq API</title>
  <link rel="icon" href="/static/app/favicon.svg" type="image/svg+xml">
  <link rel="stylesheet" href="/static/swagger-ui/swagger-ui.css">
</head>
<body>
  <div id="docs"></div>
  <script src="/static/swagger-ui/swagger-ui-bundle.js"></script>
  <script>SwaggerUIBundle({url: "/openapi.json", dom_id: "#docs"});</script>
</body>
</html>
"""


@bp.get("/openapi.json")
def openapi_document() -> Response:
    document = current_app.extensions.get("convq.openapi")
    if document is None:
        document = current_app.extensions["convq.openapi"] = openapi.build(runtime().settings)
    return json_response(document)


@bp.get("/favicon.ico")
def favicon() -> Response:
    """The page's icon (api/static/app/favicon.svg, drawn as an ICO) where browsers look for it unasked."""
    return send_from_directory(Path(bp.static_folder) / "app", "favicon.ico", mimetype="image/vnd.microsoft.icon")


@bp.get("/docs")
def docs() -> Response:
    return Response(DOCS_PAGE, mimetype="text/html")
