"""Session fixtures: one real redis-server and one real Celery worker, both on 127.0.0.1, shared by the suite."""

import pytest

from api import create_app
from shared.jobstore import JobStore
from shared.settings import Settings
from tests.support import RedisServer, Stack, Worker


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def settings(redis_server) -> Settings:
    return Settings(
        redis_url=redis_server.url,
        max_epochs=100_000,
        max_matrix_elements=10_000,
        max_body_bytes=1_000_000,
        max_work=10**12,
        max_wait_seconds=5,
    )


@pytest.fixture(scope="session")
def worker(settings, tmp_path_factory):
    started = Worker(settings, tmp_path_factory.mktemp("worker") / "worker.log", "suite").start()
    yield started
    started.stop()


@pytest.fixture(scope="session")
def live_stack(tmp_path_factory):
    """The whole stack over real HTTP, as `make run` starts it, for the browser and command-line tests."""
    started = Stack(tmp_path_factory.mktemp("live-stack"), MAX_STREAM_SECONDS="60")
    yield started
    started.stop()


@pytest.fixture(scope="session")
def app(settings):
    return create_app(settings)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def store(settings) -> JobStore:
    return JobStore.from_settings(settings)


@pytest.fixture(scope="module")
def own_redis_server(tmp_path_factory):
    """A redis-server for one module alone, whose queues no session worker drains (tests that count messages)."""
    server = RedisServer(tmp_path_factory.mktemp("own-redis")).start()
    yield server
    server.stop()
