"""The web page at /: api/pages/index.html with the CSS and JavaScript modules of api/static/app.

No build step, works offline. The page lives outside the static folder, so it is only ever served here,
with its Content-Security-Policy.
"""

from pathlib import Path

from flask import Blueprint, Response, send_from_directory

bp = Blueprint("web", __name__)

PAGE_DIRECTORY = Path(__file__).parent / "pages"

# Scripts, styles and fetches only from this origin, never inline; images also from blob: URLs (results).
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "img-src 'self' blob: data:",
        "style-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)


@bp.get("/")
def index() -> Response:
    response = send_from_directory(PAGE_DIRECTORY, "index.html", max_age=0)
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return response
