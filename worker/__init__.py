"""Celery workers: run the PyTorch core on jobs from the queue."""
