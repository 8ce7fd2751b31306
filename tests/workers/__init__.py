"""Celery app modules that wrap the shipped worker to inject one fault each, for the fault tests."""
