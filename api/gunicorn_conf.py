"""Gunicorn settings for the API, derived from convq's settings."""

from shared.settings import get_settings

_settings = get_settings()

bind = f"{_settings.host}:{_settings.port}"
# Threads, so that slow clients and long polls do not starve other requests.
worker_class = "gthread"
workers = 2
threads = 8
accesslog = "-"
