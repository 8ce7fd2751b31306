"""Facts that two layers must share but may not import from each other (the import contracts forbid it) agree.

services/ imports nothing of shared/, client/ nothing of the server: each keeps its own copy of a fact, and
this module is the one place where the copies are compared.
"""

from typing import get_args

from hypothesis import given
from hypothesis import strategies as st

import client.client
import client.models
import services
from api import events, parameters
from shared import response_models, shapes
from shared.jobstore import BLOCKING_SOCKET_TIMEOUT_SECONDS, JobStore
from shared.settings import Settings
from shared.taskqueue import TASK_FOR_KIND

pairs = st.tuples(st.integers(1, 50), st.integers(1, 50))


@given(pairs, pairs, st.tuples(st.integers(0, 5), st.integers(0, 5)), pairs)
def test_the_api_and_the_core_compute_the_same_output_shape(input_shape, kernel_shape, padding, stride):
    expected = services.output_shape(input_shape, kernel_shape, padding, stride)
    assert shapes.output_shape(input_shape, kernel_shape, padding, stride) == expected


def test_every_job_kind_has_a_task_and_the_client_knows_the_same_kinds_and_statuses():
    assert tuple(TASK_FOR_KIND) == response_models.JOB_KINDS
    assert get_args(client.models.JobKind) == response_models.JOB_KINDS
    assert get_args(client.models.JobStatus) == response_models.JOB_STATUSES


def test_the_client_pages_by_the_api_s_largest_page():
    assert parameters.PAGE_LIMIT.high == client.client.MAX_PAGE


def test_a_quiet_event_stream_s_keep_alive_comes_before_any_reader_gives_up():
    """A keep-alive later than the blocking socket's timeout reads as a lost Redis; later than the client's, as a
    lost server."""
    store = JobStore.from_settings(Settings(redis_url="redis://127.0.0.1:1/0"))
    blocking_timeout = store.blocking.connection_pool.connection_kwargs["socket_timeout"]
    assert blocking_timeout == BLOCKING_SOCKET_TIMEOUT_SECONDS
    assert blocking_timeout > events.KEEPALIVE_SECONDS
    assert events.KEEPALIVE_SECONDS < client.client.STREAM_READ_TIMEOUT
