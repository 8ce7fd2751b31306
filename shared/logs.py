"""One JSON object per log line, from the API and the workers alike.

Every line carries the service, and the request id and job id of whatever the
process is doing at the time (set through the context variables below), so
one grep follows a job from its submission to its result.
"""

import logging
import logging.config
import re
from collections.abc import Mapping
from contextvars import ContextVar

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
job_id: ContextVar[str | None] = ContextVar("job_id", default=None)


class ContextFilter(logging.Filter):
    """Stamp each record with the current request id and job id."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        record.job_id = job_id.get()
        return True


# A query parameter whose name says it carries a secret (api_key, token, access_token, password, ...), and its value.
SECRET_QUERY_PARAMETER = re.compile(
    r"(?P<name>(?:^|[?&;])[^=&;\s\"]*(?:key|token|secret|passw|pwd|auth|sig|credential|session)[^=&;\s\"]*=)"
    r"[^&;\s\"]*",
    re.IGNORECASE,
)
REDACTED = "[redacted]"


def redact(text: str) -> str:
    """Replace the value of every secret-looking query parameter in a URL, query or request line."""
    return SECRET_QUERY_PARAMETER.sub(lambda match: match["name"] + REDACTED, text)


class RedactSecrets(logging.Filter):
    """Keep secrets sent in a URL's query (?api_key=...) out of gunicorn's access log lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, Mapping):  # gunicorn passes its access log atoms as one mapping
            record.args = {
                name: redact(value) if isinstance(value, str) else value for name, value in record.args.items()
            }
        elif isinstance(record.args, tuple):
            record.args = tuple(redact(value) if isinstance(value, str) else value for value in record.args)
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        return True


def logging_config(level: str, service: str) -> dict:
    """The dictConfig that sends every logger's records to stderr as JSON lines."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"context": {"()": ContextFilter}, "redact": {"()": RedactSecrets}},
        "formatters": {
            "json": {
                "()": "pythonjsonlogger.json.JsonFormatter",
                "fmt": ["levelname", "name", "message", "request_id", "job_id"],
                "rename_fields": {"levelname": "level", "name": "logger"},
                "timestamp": "time",
                "static_fields": {"service": service},
            }
        },
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "formatter": "json", "filters": ["context"]},
        },
        "root": {"level": level, "handlers": ["stderr"]},
        # gunicorn's own loggers keep their handlers unless told otherwise.
        "loggers": {
            name: {"level": level, "handlers": ["stderr"], "propagate": False, "filters": ["redact"]}
            for name in ("gunicorn.error", "gunicorn.access")
        },
    }


def configure_logging(level: str, service: str) -> None:
    logging.config.dictConfig(logging_config(level, service))
    logging.captureWarnings(True)  # warnings become JSON lines too
