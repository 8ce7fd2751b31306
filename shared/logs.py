"""One JSON object per log line, from the API and the workers alike.

Every line carries the service, and the request id and job id of whatever the
process is doing at the time (set through the context variables below), so
one grep follows a job from its submission to its result.
"""

import logging
import logging.config
from contextvars import ContextVar

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
job_id: ContextVar[str | None] = ContextVar("job_id", default=None)


class ContextFilter(logging.Filter):
    """Stamp each record with the current request id and job id."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        record.job_id = job_id.get()
        return True


def logging_config(level: str, service: str) -> dict:
    """The dictConfig that sends every logger's records to stderr as JSON lines."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"context": {"()": ContextFilter}},
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
            name: {"level": level, "handlers": ["stderr"], "propagate": False}
            for name in ("gunicorn.error", "gunicorn.access")
        },
    }


def configure_logging(level: str, service: str) -> None:
    logging.config.dictConfig(logging_config(level, service))
    logging.captureWarnings(True)  # warnings become JSON lines too
