"""What the views need at run time, built once by the app factory: settings, job store, task queue."""

from dataclasses import dataclass

from celery import Celery
from flask import current_app

from shared.jobstore import JobStore
from shared.settings import Settings
from shared.shapes import Limits


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    store: JobStore
    queue: Celery

    @property
    def limits(self) -> Limits:
        settings = self.settings
        return Limits(
            settings.max_matrix_elements, settings.max_epochs, settings.max_work, settings.soft_time_limit_seconds
        )


def runtime() -> Runtime:
    """The Runtime of the app handling the current request."""
    return current_app.extensions["convq"]
