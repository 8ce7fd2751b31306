"""One JSON object per log line, from the API and the workers alike; or plain text lines for a person.

Every line carries the service, and the request id and job id of whatever the
process is doing at the time (set through the context variables below), so
one grep follows a job from its submission to its result. JSON is the default;
`make run` asks for text (LOG_FORMAT=text) when it writes to a terminal.
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
    """Keep secrets sent in a URL's query (?api_key=...) out of gunicorn's lines (its access lines carry the query)."""

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


class TextFormatter(logging.Formatter):
    """`HH:MM:SS service LEVEL logger: message`, then the request and job ids when there are any."""

    def __init__(self, service: str):
        super().__init__(f"%(asctime)s {service:<6} %(levelname)-7s %(name)s: %(message)s", datefmt="%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        ids = [f"{name}={value}" for name in ("request_id", "job_id") if (value := getattr(record, name, None))]
        return " ".join([super().format(record), *ids])


def logging_config(level: str, service: str, log_format: str) -> dict:
    """The dictConfig that sends every logger's records to stderr, as JSON lines or as text lines."""
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
            },
            "text": {"()": TextFormatter, "service": service},
        },
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "formatter": log_format, "filters": ["context"]},
        },
        "root": {"level": level, "handlers": ["stderr"]},
        # gunicorn's own loggers keep their handlers unless told otherwise. Its access lines would repeat the
        # line that api/telemetry.py writes for every request (with its request id): warnings only.
        "loggers": {
            "gunicorn.error": {"level": level, "handlers": ["stderr"], "propagate": False, "filters": ["redact"]},
            "gunicorn.access": {"level": "WARNING", "handlers": ["stderr"], "propagate": False, "filters": ["redact"]},
        },
    }


def configure_logging(level: str, service: str, log_format: str) -> None:
    logging.config.dictConfig(logging_config(level, service, log_format))
    logging.captureWarnings(True)  # warnings become JSON lines too
