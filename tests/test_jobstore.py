"""The job store's guarantees on a real Redis: redelivery and overlapping attempts never duplicate or corrupt a job."""

import dataclasses
import re

import orjson
import pytest

from shared import jobstore_scripts
from shared.jobstore import (
    INLINE_BYTES,
    LEGACY_UNFINISHED_KEY,
    RECONCILER_LOCK_KEY,
    SCRIPT_KEYS,
    SEQUENCE_KEY,
    UNFINISHED_KEY,
    AttemptsExhausted,
    JobKeys,
    JobStore,
    attempt_result_key_for,
    idempotency_key_for,
    index_key_for,
    job_keys_pattern,
)
from shared.packing import Packed
from shared.response_models import Job, JobSummary, Problem
from shared.settings import Settings
from worker.progress import EpochRecorder

REQUEST = Packed(b'{"input": {"shape": [1, 1], "dtype": "float32", "data": "\\u0000array-0"}}', b"\x00\x00\x80?")
OWNER = "anonymous"


@pytest.fixture
def store(redis_server) -> JobStore:
    return JobStore(redis_server.client(), ttl_seconds=60, max_attempts=2)


def test_a_new_job_is_queued_with_its_request_and_expires(store, redis_server):
    job = store.create("kernel_training", REQUEST, OWNER, epochs=5)[0]
    assert job["status"] == "queued" and job["progress"] == {"epoch": 0, "epochs": 5, "loss": None}
    assert store.get(job["id"]) == job
    assert (job["queue"], job["device"]) == ("cpu", None)
    attempt = store.start(job["id"], "cuda:0")
    assert attempt.number == 1 and attempt.request == REQUEST
    assert store.get(job["id"])["device"] == "cuda:0"
    store.record_epochs(attempt, 1, [0.5])
    redis = redis_server.client()
    for key in redis.scan_iter(job_keys_pattern(job["id"])):
        assert 0 < redis.ttl(key) <= 60


def test_a_redelivered_run_records_each_epoch_once_and_supersedes_the_first(store):
    job_id = store.create("kernel_training", REQUEST, OWNER, epochs=5)[0]["id"]
    first = store.start(job_id, "cpu")
    assert store.record_epochs(first, 1, [10.0, 5.0]).go_on and store.record_epochs(first, 3, [10.0 / 3]).go_on
    second = store.start(job_id, "cpu")  # the message was redelivered: the first run may still be alive
    assert second.number == 2
    assert store.record_epochs(second, 1, [10.0, 5.0]) == (True, 3)  # already stored: not written again
    assert store.record_epochs(second, 3, [10.0 / 3, 2.5, 2.0]) == (True, 5)
    assert store.record_epochs(first, 4, [99.0]) == (False, 5)  # the first run is told to stop, and writes nothing
    assert store.succeed(first, b'{"stale": true}') is None
    assert store.succeed(second, b'{"fresh": true}') == "succeeded"
    page = store.losses(job_id, since=0)
    assert page["losses"] == [10.0, 5.0, 10.0 / 3, 2.5, 2.0] and page["epochs_done"] == 5
    assert orjson.loads(orjson.dumps(store.get(job_id)["result"])) == {"fresh": True}


def forget_after_the_first_epoch(redis, keys: JobKeys) -> None:
    """The job as a replica that received only the first batch holds it: one loss, one progress event."""
    redis.ltrim(keys.losses, 0, 0)
    [(first_id, fields)] = redis.xrange(keys.events, count=1)
    redis.delete(keys.events)  # XDEL would keep the stream's last id, which the replica never saw
    redis.xadd(keys.events, fields, id=first_id)


def test_losses_a_failover_forgot_are_sent_again_so_each_epoch_is_stored_once(store, redis_server):
    job_id = store.create("kernel_training", REQUEST, OWNER, epochs=6)[0]["id"]
    recorder = EpochRecorder(store, store.start(job_id, "cpu"))
    for epoch, loss in enumerate([6.0, 5.0, 4.0], 1):
        recorder(epoch, loss)
        recorder.flush()
    forget_after_the_first_epoch(redis_server.client(), JobKeys.of(job_id))  # a replica that lagged is promoted
    assert store.record_epochs(recorder.attempt, 4, [3.0]) == (True, 1)  # after a gap: nothing written, 1 stored
    for epoch, loss in enumerate([3.0, 2.0], 4):
        recorder(epoch, loss)
    assert not recorder.flush()
    recorder(6, 1.0)
    assert not recorder.flush()
    page = store.losses(job_id, since=0)
    assert page["losses"] == [6.0, 5.0, 4.0, 3.0, 2.0, 1.0] and page["epochs_done"] == 6


def test_a_finished_job_is_not_started_again(store):
    job_id = store.create("correlation", REQUEST, OWNER)[0]["id"]
    store.succeed(store.start(job_id, "cpu"), b"{}")
    assert store.start(job_id, "cpu") is None
    assert store.get(job_id)["status"] == "succeeded"


def test_a_job_whose_worker_dies_every_time_fails_after_max_attempts(store):
    job_id = store.create("correlation", REQUEST, OWNER)[0]["id"]
    store.start(job_id, "cpu")
    store.start(job_id, "cpu")
    with pytest.raises(AttemptsExhausted):
        store.start(job_id, "cpu")
    job = store.get(job_id)
    assert job["status"] == "failed"
    error = orjson.loads(orjson.dumps(job["error"]))
    assert error["title"] == "Worker lost" and "2 times" in error["detail"]


def test_cancel_stops_a_queued_job_at_once_and_a_running_one_at_its_next_epoch(store):
    queued = store.create("correlation", REQUEST, OWNER)[0]["id"]
    assert store.cancel(queued) == "cancelled"
    assert store.start(queued, "cpu") is None

    running = store.create("kernel_training", REQUEST, OWNER, epochs=3)[0]["id"]
    attempt = store.start(running, "cpu")
    assert store.record_epochs(attempt, 1, [1.0]).go_on
    assert store.cancel(running) == "running"
    assert not store.record_epochs(attempt, 2, [0.5]).go_on
    assert store.succeed(attempt, b"{}") == "cancelled"
    assert store.get(running)["result"] is None
    assert store.cancel(running) == "cancelled"


def test_a_failure_keeps_its_problem_and_unknown_jobs_are_none(store):
    job_id = store.create("correlation", REQUEST, OWNER)[0]["id"]
    attempt = store.start(job_id, "cpu")
    problem = Problem(title="Output not finite", status=422, detail="overflow")
    assert store.fail(job_id, attempt, problem) == "failed"
    assert orjson.loads(orjson.dumps(store.get(job_id)["error"])) == problem.model_dump(exclude_none=True)
    unknown = "00000000-0000-4000-8000-000000000000"
    assert store.get(unknown) is None and store.losses(unknown, 0) is None and store.cancel(unknown) is None


def test_big_requests_and_results_bypass_the_scripts_with_the_same_guarantees(store, redis_server):
    big = Packed(REQUEST.skeleton, b"x" * (INLINE_BYTES + 1))
    job_id = store.create("correlation", big, OWNER)[0]["id"]
    first = store.start(job_id, "cpu")
    assert first.request == big
    second = store.start(job_id, "cpu")  # redelivered while the first attempt still runs
    assert store.succeed(first, b'{"stale": "' + b"s" * INLINE_BYTES + b'"}') is None
    result = b'{"data": "' + b"x" * (INLINE_BYTES + 1) + b'"}'
    assert store.succeed(second, result) == "succeeded"
    assert orjson.loads(orjson.dumps(store.get(job_id)["result"])) == orjson.loads(result)
    keys = JobKeys.of(job_id)
    left = {key.decode() for key in redis_server.client().keys(job_keys_pattern(job_id))}
    # The stale attempt's result is gone, and so are the request's arrays: the job has ended.
    assert left == {keys.record, keys.events, attempt_result_key_for(job_id, 2)}
    assert store.start(job_id, "cpu") is None  # a redelivery after the end just acknowledges


def test_request_arrays_go_when_the_job_ends_and_its_shapes_stay(store, redis_server):
    redis = redis_server.client()
    for end in ("succeed", "fail", "cancel"):
        job_id = store.create("correlation", REQUEST, OWNER)[0]["id"]
        keys = JobKeys.of(job_id)
        assert redis.get(keys.arrays) == REQUEST.arrays
        if end == "cancel":
            store.cancel(job_id)
        elif end == "succeed":
            store.succeed(store.start(job_id, "cpu"), b"{}")
        else:
            store.fail(job_id, store.start(job_id, "cpu"), Problem(title="x", status=422, detail="x"))
        assert redis.exists(keys.arrays) == 0, end
        assert store.request_json(job_id) == REQUEST.skeleton  # GET /v1/jobs/<id>/output.png still has the shapes
        assert store.start(job_id, "cpu") is None


def test_a_job_whose_request_arrays_are_gone_is_not_run(store, redis_server):
    job_id = store.create("correlation", REQUEST, OWNER)[0]["id"]
    redis_server.client().delete(JobKeys.of(job_id).arrays)
    assert store.start(job_id, "cpu") is None
    assert store.get(job_id)["attempts"] == 0


def test_results_and_losses_have_their_own_retention(redis_server):
    redis = redis_server.client()
    store = JobStore(redis, ttl_seconds=600, result_ttl_seconds=60)
    job_id = store.create("kernel_training", REQUEST, OWNER, epochs=1)[0]["id"]
    attempt = store.start(job_id, "cpu")
    store.record_epochs(attempt, 1, [0.5])
    store.succeed(attempt, b'{"loss": 0.5}')
    keys = JobKeys.of(job_id)
    assert 500 < redis.ttl(keys.record) <= 600 and 500 < redis.ttl(keys.events) <= 600
    assert 0 < redis.ttl(keys.packed_result) <= 60 and 0 < redis.ttl(keys.losses) <= 60
    redis.delete(keys.packed_result, keys.losses)  # as when they expire
    job = store.get(job_id)
    assert job["status"] == "succeeded" and job["result"] is None


def test_a_message_of_an_expired_job_leaves_no_key_behind(redis_server):
    """START and FINISH on a job whose keys expired must not recreate its record as a key that never expires."""
    redis = redis_server.client()
    store = JobStore(redis, ttl_seconds=1)
    job = store.create("correlation", REQUEST, OWNER)[0]
    keys = JobKeys.of(job["id"])
    redis.delete(*(key for key in keys if key != keys.metrics))
    assert store.start(job["id"], "cpu") is None
    assert store.fail(job["id"], None, Problem(title="x", status=500, detail="x")) is None
    assert redis.exists(keys.record) == 0


def test_key_names_stay_as_stored_by_earlier_versions():
    """Jobs queued before an upgrade are read where they were written (README: upgrades with jobs waiting)."""
    assert JobKeys.of("j") == (
        "convq:job:j",
        "convq:job:j:request",
        "convq:job:j:result",
        "convq:job:j:losses",
        "convq:job:j:events",
        "convq:metrics",
        "convq:job:j:arrays",
        "convq:job:j:packed-result",
    )
    assert (index_key_for("o"), idempotency_key_for("o", "k"), attempt_result_key_for("j", 2)) == (
        "convq:jobs:o",
        "convq:idempotency:o:k",
        "convq:job:j:result:2",
    )
    assert (SEQUENCE_KEY, LEGACY_UNFINISHED_KEY, UNFINISHED_KEY, RECONCILER_LOCK_KEY) == (
        "convq:jobs:sequence",
        "convq:unfinished",
        "convq:unfinished:2",
        "convq:reconciler",
    )


def test_each_script_uses_only_the_keys_declared_for_it():
    for name, layout in SCRIPT_KEYS.items():
        code = re.sub(r"'[^']*'", "''", getattr(jobstore_scripts, name))  # not the strings ('idempotency_key')
        used = set(re.findall(r"\b(\w+)_key\b", code))
        assert used and used <= set(layout), f"{name} uses undeclared keys {used - set(layout)}"
        assert "KEYS[" not in code, f"{name} reads a key by position"


def test_the_store_answers_with_exactly_the_documented_models_fields(store):
    """The API's answers are the store's views: dumps of Job and JobSummary, whose schemas the document holds."""
    job_id = store.create("kernel_training", REQUEST, "listed", epochs=2)[0]["id"]
    assert list(store.get(job_id)) == list(Job.model_fields)
    [listed], _ = store.jobs("listed", status=None, kind=None, limit=10, before=None)
    assert list(listed) == list(JobSummary.model_fields) and listed["id"] == job_id


def test_big_arrays_and_results_live_in_the_bulk_redis_with_the_same_guarantees(redis_server, own_redis_server):
    redis, bulk = redis_server.client(), own_redis_server.client()
    store = JobStore(redis, ttl_seconds=60, bulk=bulk)
    big = Packed(REQUEST.skeleton, b"a" * (INLINE_BYTES + 1))
    job_id = store.create("correlation", big, OWNER)[0]["id"]
    keys = JobKeys.of(job_id)
    assert bulk.get(keys.arrays) == big.arrays and not redis.exists(keys.arrays)
    first, second = store.start(job_id, "cpu"), store.start(job_id, "cpu")  # the second: a redelivery
    assert first.request == second.request == big
    result = b'{"data": "' + b"r" * (INLINE_BYTES + 1) + b'"}'
    assert store.succeed(first, result) is None  # superseded: its result is dropped
    assert store.succeed(second, result) == "succeeded"
    assert orjson.loads(orjson.dumps(store.get(job_id)["result"])) == orjson.loads(result)
    assert store.result(job_id) == result
    assert {key.decode() for key in bulk.keys(job_keys_pattern(job_id))} == {attempt_result_key_for(job_id, 2)}
    assert 0 < bulk.ttl(attempt_result_key_for(job_id, 2)) <= 60
    assert not redis.keys(job_keys_pattern(job_id) + ":result*")  # the queue Redis holds no big bytes

    lost = store.create("correlation", big, OWNER)[0]["id"]
    bulk.flushdb()  # the bulk Redis lost its data (a new volume, or run without persistence)
    assert store.start(lost, "cpu") is None
    job = store.get(lost)
    assert job["status"] == "failed" and orjson.loads(orjson.dumps(job["error"]))["title"] == "Request lost"
    cancelled = store.create("correlation", big, OWNER)[0]["id"]
    store.cancel(cancelled)
    assert not bulk.exists(JobKeys.of(cancelled).arrays)


def test_an_end_sent_again_keeps_its_big_result(store):
    # A FINISH whose reply is lost (a timeout, a failover) is sent again by redis-py's retry: the job has ended by
    # then, and a "not yours" answer had the worker delete the result the job names (the failover test saw it).
    job_id = store.create("correlation", REQUEST, OWNER)[0]["id"]
    attempt = store.start(job_id, "cpu")
    result = b'{"data": "' + b"r" * (INLINE_BYTES + 1) + b'"}'
    assert store.succeed(attempt, result) == "succeeded"
    assert store.succeed(attempt, result) == "succeeded"
    assert store.result(job_id) == result
    assert store.succeed(dataclasses.replace(attempt, number=2), result) is None  # another attempt's: refused
    assert store.result(job_id) == result


def test_big_values_go_to_either_redis_as_they_are_without_a_copy(redis_server, own_redis_server):
    # hiredis's packer copied a 4 MB value at about 0.5 GB/s: 9 ms of CPU a SET (shared.redis_clients).
    settings = Settings(redis_url=redis_server.url, bulk_redis_url=own_redis_server.url)
    store = JobStore.from_settings(settings)
    value = bytes(INLINE_BYTES + 1)
    for client in (store.redis, store.bulk):
        connection = client.connection_pool.get_connection()
        try:
            assert any(part is value for part in connection.pack_command("SET", "key", value))
        finally:
            client.connection_pool.release(connection)
