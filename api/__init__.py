"""The convq HTTP API: a Flask app that validates requests and queues jobs for the workers."""

from flask import Flask

from api import access, docs, health, holds, problems, telemetry, v1, web
from api.big_requests import yielding_when_big
from api.runtime import Runtime
from shared.jobstore import JobStore
from shared.logs import configure_logging
from shared.settings import Settings, get_settings
from shared.startup import check_settings
from shared.taskqueue import create_celery


def create_app(settings: Settings | None = None) -> Flask:
    """Create and configure an instance of the application."""
    settings = settings or get_settings()
    configure_logging(settings.log_level, "api", settings.log_format)
    check_settings(settings)
    app = Flask(__name__)
    app.config.update(MAX_CONTENT_LENGTH=settings.max_body_bytes)
    store = JobStore.from_settings(settings)
    app.extensions["convq"] = Runtime(settings, store, create_celery(settings))
    problems.init_app(app)
    telemetry.init_app(app)
    app.before_request(problems.refuse_long_urls)  # after telemetry's: even a 414 gets its request id
    access.init_app(app, settings)
    holds.init_app(app, settings.max_held_requests, settings.max_held_requests_per_caller)
    app.register_blueprint(health.bp)
    app.register_blueprint(v1.bp)
    app.register_blueprint(docs.bp)
    app.register_blueprint(web.bp)
    app.wsgi_app = yielding_when_big(app.wsgi_app, settings.big_work_niceness)
    return app
