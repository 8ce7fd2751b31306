"""The Python client (client/) against the whole stack over real HTTP: every route, typed answers and errors."""

import io
from datetime import datetime

import numpy as np
import pytest
import requests
import torch
from PIL import Image

from client import (
    ApiError,
    Client,
    ConvqError,
    CorrelationResult,
    Job,
    ProgressEvent,
    ServerUnreachable,
    StatusEvent,
    TrainingResult,
    WaitTimeout,
)
from client.events import Retry, ServerSentEvent, parse
from tests.seed import EDGE_IMAGE, EDGE_KERNEL, EDGES, K_2X2, X_3X3, Y_3X3
from tests.support import Stack, free_port, wait_until
from tests.test_operations import parse_metrics

EVENT_REQUESTS = 'convq_http_requests_total{method="GET",route="/v1/jobs/<job_id>/events",status="200"}'

# The chapter's two-channel input and kernel, and their one-channel output.
X_2CH = [[[0.0, 1.0, 2.0], [3.0, 4.0, 5.0], [6.0, 7.0, 8.0]], [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]]]
K_2CH = [[[0.0, 1.0], [2.0, 3.0]], [[1.0, 2.0], [3.0, 4.0]]]
Y_2CH = [[56.0, 72.0], [104.0, 120.0]]
# Its three output channels (K, K + 1, K + 2), each with its bias: 1, 0, -1.
K_3X2CH = np.stack([np.array(K_2CH) + offset for offset in range(3)])
Y_3CH_BIASED = [[[57.0, 73.0], [105.0, 121.0]], [[76.0, 100.0], [148.0, 172.0]], [[95.0, 127.0], [191.0, 223.0]]]


def pairs_of_a_known_kernel(count: int = 5) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    """A 1 x 2 x 2 x 2 kernel and `count` (2 x 6 x 6 input, 1 x 5 x 5 target) pairs it makes, by torch's conv2d."""
    generator = torch.Generator().manual_seed(0)
    kernel = torch.randn((1, 2, 2, 2), generator=generator)
    inputs = [torch.randn((2, 6, 6), generator=generator) for _ in range(count)]
    pairs = [(x.numpy(), torch.nn.functional.conv2d(x[None], kernel)[0].numpy()) for x in inputs]
    return kernel.numpy(), pairs


# Adam on the mean loss, two pairs a step in a new order every epoch, stopping below the tolerance.
PAIRS_OPTIONS = {"optimizer": "adam", "lr": 0.05, "loss": "mean", "tolerance": 1e-6, "batch_size": 2, "shuffle": True}


def long_training_input() -> np.ndarray:
    """A 200 x 200 input: with a 5 x 5 kernel, 10,000 epochs take seconds on a CPU."""
    return (np.add.outer(np.arange(200) * 7, np.arange(200) * 3) % 5).astype(np.float32)


def start_long_training(api: Client, epochs: int = 10_000) -> Job:
    return api.train(long_training_input(), target_kernel=np.ones((5, 5)), lr=1e-8, epochs=epochs)


def finished(api: Client, job: Job) -> Job:
    return job if job.finished else api.wait(job.id, timeout=30)


@pytest.fixture
def api(live_stack):
    with Client(live_stack.url) as client:
        yield client


def test_the_seed_3x3_example_with_lists(api):
    job = finished(api, api.correlate(X_3X3, K_2X2, wait=2))
    assert job.kind == "correlation" and job.status == "succeeded" and job.error is None
    assert isinstance(job.result, CorrelationResult)
    assert job.result.output.tolist() == Y_3X3
    assert isinstance(job.created_at, datetime) and job.created_at <= job.finished_at < job.expires_at


@pytest.mark.parametrize("result_format", ["lists", "base64"])
def test_the_seed_3x3_example_with_numpy_arrays(api, result_format):
    x = np.array(X_3X3, dtype=np.float64)  # sent as float64, the kernel (integers) as float32
    job = finished(api, api.correlate(x, np.array(K_2X2, dtype=np.int64), result_format=result_format, wait=2))
    assert job.result.output.dtype == np.float32
    np.testing.assert_array_equal(job.result.output, np.array(Y_3X3))


def test_padding_stride_and_bias_reach_the_server(api):
    job = finished(api, api.correlate(np.ones((4, 4)), [[1.0]], padding=1, stride=[2, 3], bias=0.5, wait=2))
    assert job.result.output.tolist() == [[0.5, 0.5], [0.5, 1.5], [0.5, 1.5]]


@pytest.mark.parametrize("form", ["lists", "numpy"])
def test_the_chapters_two_channel_example(api, form):
    x, k = (X_2CH, K_2CH) if form == "lists" else (np.array(X_2CH), np.array(K_2CH, dtype=np.float32))
    job = finished(api, api.correlate(x, k, device="cpu", wait=2))
    assert job.status == "succeeded" and job.result.output.tolist() == Y_2CH
    assert job.queue == "cpu" and job.device == "cpu"


@pytest.mark.parametrize("result_format", ["lists", "base64"])
def test_three_output_channels_with_a_bias_each(api, result_format):
    job = api.correlate(np.array(X_2CH), K_3X2CH, bias=np.array([1, 0, -1]), result_format=result_format, wait=2)
    output = finished(api, job).result.output
    assert output.shape == (3, 2, 2) and output.dtype == np.float32
    assert output[0].tolist() == [[57.0, 73.0], [105.0, 121.0]] and output.tolist() == Y_3CH_BIASED


def test_a_training_on_five_pairs_recovers_the_kernel_and_stops_once_converged(api):
    kernel, pairs = pairs_of_a_known_kernel()
    # Pairs as (input, target) tuples of numpy arrays, and as dicts of nested lists.
    given = pairs[:3] + [{"input": x.tolist(), "target": y.tolist()} for x, y in pairs[3:]]
    job = api.train(pairs=given, kernel_shape=kernel.shape, epochs=2000, **PAIRS_OPTIONS)
    assert job.queue == "cpu"

    job = api.wait(job.id, timeout=60)
    assert job.status == "succeeded" and job.device == "cpu"
    result = job.result
    assert result.kernel.shape == (1, 2, 2, 2) and result.bias is None
    np.testing.assert_allclose(result.kernel, kernel, atol=0.01)
    assert result.converged and result.epochs_run < 2000 and result.loss < 1e-6
    assert len(result.loss_history) == result.epochs_run


def test_a_refusal_inside_pairs_points_at_the_pair(api):
    with pytest.raises(ApiError) as refused:
        api.train(pairs=[(X_2CH, None), (X_2CH[0], None)], target_kernel=K_2CH)
    assert [fault.loc for fault in refused.value.problem.errors] == ["/pairs/1/input"]


def test_training_the_edge_kernel_streams_every_epoch_in_order_then_the_status(api):
    job = api.train(EDGE_IMAGE, target_kernel=EDGE_KERNEL, lr=0.03, epochs=300)
    assert job.kind == "kernel_training" and job.status in ("queued", "running", "succeeded")

    events = list(api.events(job.id))

    *progress, status = events
    assert all(isinstance(event, ProgressEvent) for event in progress)
    assert [event.epoch for event in progress] == list(range(1, 301))
    assert {event.epochs for event in progress} == {300}
    assert progress[0].loss > progress[-1].loss
    assert isinstance(status, StatusEvent) and status.job.status == "succeeded"
    result = status.job.result
    assert isinstance(result, TrainingResult) and result.epochs_run == 300 and result.bias is None
    assert not result.converged  # without a tolerance, every epoch runs
    np.testing.assert_allclose(result.kernel, [[1.0, -1.0]], atol=1e-3)
    assert result.loss_history[-1] == progress[-1].loss == result.loss

    resumed = list(api.events(job.id, last_event_id=progress[-3].id))
    assert [event.epoch for event in resumed[:-1]] == [299, 300] and isinstance(resumed[-1], StatusEvent)

    page = api.losses(job.id, since=298)
    assert page.losses == result.loss_history[298:] and page.epochs_done == page.epochs == 300
    assert page.status == "succeeded"
    assert api.loss_svg(job.id).lstrip().startswith("<?xml") and "<svg" in api.loss_svg(job.id)


def test_a_failed_job_is_a_job_with_a_problem_not_an_exception(api):
    job = api.wait(api.train(EDGE_IMAGE, target_kernel=EDGE_KERNEL, lr=1e6, epochs=50).id, timeout=30)
    assert job.status == "failed" and job.result is None
    assert job.error.title == "Training diverged" and "lr" in job.error.detail


def test_a_bad_request_raises_api_error_with_the_problems_locations(api):
    with pytest.raises(ApiError) as refused:
        api.correlate([[1.0, 2.0], [3.0]], K_2X2)
    problem = refused.value.problem
    assert refused.value.status == problem.status == 422 and problem.title == "Invalid request"
    assert [fault.loc for fault in problem.errors] == ["/input/1"]
    assert "same length" in problem.errors[0].msg

    with pytest.raises(ApiError) as refused:
        api.train(EDGE_IMAGE, target=EDGES, target_kernel=EDGE_KERNEL)
    assert refused.value.problem.errors[0].loc == "/target"

    with pytest.raises(ApiError) as unknown:
        api.job("00000000-0000-0000-0000-000000000000")
    assert unknown.value.status == 404 and unknown.value.problem.errors == ()


def test_an_unreachable_server_raises_server_unreachable():
    with Client(f"http://127.0.0.1:{free_port()}") as nobody, pytest.raises(ServerUnreachable):
        nobody.health()


def test_everything_the_client_raises_is_a_convq_error():
    import client
    import client.errors

    raised = [name for name in client.errors.__all__ if name != "ConvqError"]
    assert raised and all(issubclass(getattr(client.errors, name), ConvqError) for name in raised)
    assert set(client.errors.__all__) <= set(client.__all__)
    assert issubclass(WaitTimeout, TimeoutError)  # what wait() raised before the tree had a leaf for it


def test_cancel_stops_a_running_training_and_wait_times_out_before(api):
    job = start_long_training(api)
    with pytest.raises(TimeoutError):
        api.wait(job.id, timeout=0.5)
    cancelled = api.cancel(job.id)
    assert cancelled.id == job.id and cancelled.status in ("running", "cancelled")  # stopping, or never started
    assert api.wait(job.id, timeout=30).status == "cancelled"
    assert api.job(job.id).status == "cancelled"


def test_jobs_lists_newest_first_and_follows_the_cursor_past_a_page(api):
    submitted = [api.correlate([[float(n)]], [[1.0]]).id for n in range(103)]  # a page holds at most 100
    listed = [job.id for job in api.jobs(kind="correlation", limit=103)]
    assert listed == submitted[::-1]
    assert all(job.result is None for job in api.jobs(limit=3))
    assert len(list(api.jobs(limit=2))) == 2
    api.wait(submitted[-1], timeout=30)
    assert all(job.status == "succeeded" for job in api.jobs(status="succeeded", kind="correlation", limit=5))


def test_an_image_correlation_and_its_output_png(api):
    pixels = np.zeros((10, 16), dtype=np.uint8)
    pixels[:, 6:11] = 255  # a white stripe
    png = io.BytesIO()
    Image.fromarray(pixels).save(png, format="PNG")

    job = finished(api, api.correlate_image(png.getvalue(), "edge", device="cpu", wait=2))  # a kernel's name
    assert job.status == "succeeded" and job.device == "cpu"
    assert job.result.output.shape == (10, 15)
    assert job.result.output[0, 5] == -1.0 and job.result.output[0, 10] == 1.0

    image = Image.open(io.BytesIO(api.output_png(job.id)))
    assert image.format == "PNG" and image.size == (15, 10)


def test_kernels_health_and_readiness(api):
    kernels = {kernel.name: kernel for kernel in api.kernels()}
    assert kernels["edge"].matrix == EDGE_KERNEL and "sobel-x" in kernels
    assert api.health() == {"status": "ok"}
    assert api.ready()["status"] == "ready"


@pytest.fixture(scope="module")
def strict_stack(tmp_path_factory):
    """A stack with API keys, whose event streams close after 1 s: following a training takes several."""
    started = Stack(tmp_path_factory.mktemp("strict"), MAX_STREAM_SECONDS="1", API_KEYS='{"alice": "alice-key"}')
    yield started
    started.stop()


def test_the_api_key_is_sent_as_a_bearer_token(strict_stack):
    with Client(strict_stack.url) as anonymous, pytest.raises(ApiError) as refused:
        anonymous.kernels()
    assert refused.value.status == 401
    with Client(strict_stack.url, api_key="alice-key") as alice:
        assert alice.kernels() and list(alice.jobs()) == []


def test_events_reconnect_with_last_event_id_when_the_server_ends_a_stream(strict_stack):
    with Client(strict_stack.url, api_key="alice-key") as api:
        job = start_long_training(api, epochs=6000)
        events = list(api.events(job.id))

    *progress, status = events
    assert [event.epoch for event in progress] == list(range(1, 6001))  # nothing lost, nothing twice
    assert isinstance(status, StatusEvent) and status.job.status == "succeeded"
    metrics = wait_until(lambda: requests.get(f"{strict_stack.url}/metrics", timeout=5).text, 5, "metrics")
    assert parse_metrics(metrics)[EVENT_REQUESTS] >= 2, "the training outlived a stream: the client reconnected"


def test_the_sse_parser_follows_the_standard():
    lines = [
        "retry: 2500",
        "",
        ": keep-alive",
        "",
        "id: 7-0",
        "event: progress",
        "data: {",
        "data:}",
        "",
        "data: x",
        "",
    ]
    retry = Retry()
    events = list(parse(lines, retry))
    assert retry.seconds == 2.5
    assert events == [ServerSentEvent("progress", "{\n}", "7-0"), ServerSentEvent("message", "x", "7-0")]


def sent_content_types(api: Client) -> list[str]:
    """The content types of the requests with a body that `api` sends from now on."""
    seen: list[str] = []
    api._http.event_hooks["request"].append(
        lambda request: seen.append(request.headers["content-type"]) if "content-type" in request.headers else None
    )
    return seen


def test_big_arrays_go_as_npy_files_and_give_the_numbers_of_json(api):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 300)).astype(np.float32)  # 90,000 elements: over NPY_MIN_ELEMENTS
    k = rng.standard_normal((3, 3)).astype(np.float32)
    sent = sent_content_types(api)
    by_npy = finished(api, api.correlate(x, k, padding=1, result_format="base64", wait=10))
    by_json = finished(api, api.correlate(x.tolist(), k.tolist(), padding=1, result_format="base64", wait=10))
    assert sent[0].startswith("multipart/form-data") and sent[1] == "application/json"
    assert by_npy.status == by_json.status == "succeeded"
    assert np.array_equal(by_npy.result.output, by_json.result.output)
    assert np.array_equal(api.output_npy(by_npy.id), by_json.result.output)


def test_big_training_pairs_go_as_one_npz_and_the_kernel_comes_back_as_npy(api):
    rng = np.random.default_rng(1)
    inputs = [rng.standard_normal((120, 300)).astype(np.float32) for _ in range(2)]  # 72,000 elements in all
    options = {"target_kernel": np.array([[1.0, -1.0]]), "epochs": 3, "lr": 1e-4, "optimizer": "adam", "wait": 20}
    sent = sent_content_types(api)
    by_npz = finished(api, api.train(pairs=[(item, None) for item in inputs], **options))
    by_json = finished(api, api.train(pairs=[{"input": item.tolist()} for item in inputs], **options))
    assert sent[0].startswith("multipart/form-data") and sent[1] == "application/json"
    assert by_npz.status == by_json.status == "succeeded", by_npz.error
    assert np.array_equal(api.kernel_npy(by_npz.id), np.array(by_json.result.kernel, dtype=np.float32))
    running = start_long_training(api)
    with pytest.raises(ApiError) as refused:
        api.kernel_npy(running.id)
    api.cancel(running.id)
    assert refused.value.problem.status == 409
