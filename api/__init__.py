"""The convq HTTP API: a Flask app that validates requests and queues jobs for the workers."""

import logging

from flask import Flask

from api import health, problems, v1
from api.runtime import Runtime
from shared.jobstore import JobStore
from shared.settings import Settings, get_settings
from shared.taskqueue import create_celery


def create_app(settings: Settings | None = None) -> Flask:
    """Create and configure an instance of the application."""
    settings = settings or get_settings()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = Flask(__name__)
    app.config.update(MAX_CONTENT_LENGTH=settings.max_body_bytes)
    app.extensions["convq"] = Runtime(settings, JobStore.from_settings(settings), create_celery(settings))
    problems.init_app(app)
    app.register_blueprint(health.bp)
    app.register_blueprint(v1.bp)
    return app
