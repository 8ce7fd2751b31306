"""Several channels and several pairs: the chapter's multi-channel examples, property tests, and training on pairs."""

import base64
import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from services import Training, corr2d, corr2d_multi, corr2d_multi_reference, correlate, fit_kernel, learn_kernel
from tests.support import wait_for_job, wait_until
from tests.test_jobs_api import correlate as correlate_job
from tests.test_jobs_api import submit, train

# The chapter's two-channel input and kernel.
X_2CH = torch.tensor(
    [[[0.0, 1.0, 2.0], [3.0, 4.0, 5.0], [6.0, 7.0, 8.0]], [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]]]
)
K_2CH = torch.tensor([[[0.0, 1.0], [2.0, 3.0]], [[1.0, 2.0], [3.0, 4.0]]])


def test_chapter_multi_input_channels_sum_the_per_channel_correlations():
    expected = [[56.0, 72.0], [104.0, 120.0]]
    assert corr2d_multi_reference(X_2CH, K_2CH).tolist() == expected
    assert corr2d_multi(X_2CH, K_2CH).tolist() == expected


def test_chapter_multi_output_channels_stack_one_output_per_kernel():
    K = torch.stack((K_2CH, K_2CH + 1, K_2CH + 2))
    assert K.shape == (3, 2, 2, 2)
    expected = [[[56.0, 72.0], [104.0, 120.0]], [[76.0, 100.0], [148.0, 172.0]], [[96.0, 128.0], [192.0, 224.0]]]
    assert corr2d_multi_reference(X_2CH, K).tolist() == expected
    assert corr2d_multi(X_2CH, K).tolist() == expected


def test_chapter_1x1_kernel_is_a_matrix_multiplication_over_channels():
    generator = torch.Generator().manual_seed(0)
    X, K = torch.normal(0, 1, (3, 3, 3), generator=generator), torch.normal(0, 1, (2, 3, 1, 1), generator=generator)
    by_matmul = (K.reshape(2, 3) @ X.reshape(3, 9)).reshape(2, 3, 3)  # the chapter's corr2d_multi_in_out_1x1
    assert torch.allclose(corr2d_multi(X, K), by_matmul, atol=1e-6)
    assert torch.allclose(corr2d_multi_reference(X, K), by_matmul, atol=1e-6)


@st.composite
def channel_cases(draw):
    channels, out_channels = draw(st.integers(1, 3)), draw(st.integers(0, 3))  # 0: a C x kh x kw kernel
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    ph, pw = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    h, w = draw(st.integers(max(1, kh - 2 * ph), 9)), draw(st.integers(max(1, kw - 2 * pw), 9))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**32 - 1)))
    kernel_shape = (out_channels, channels, kh, kw) if out_channels else (channels, kh, kw)
    X, K = torch.randn((channels, h, w), generator=generator), torch.randn(kernel_shape, generator=generator)
    per_channel = out_channels and draw(st.booleans())
    bias = torch.randn(out_channels, generator=generator).tolist() if per_channel else draw(st.floats(-2, 2))
    return X, K, (ph, pw), stride, bias


@settings(max_examples=200, deadline=None)
@given(channel_cases())
def test_multi_channel_correlation_matches_the_reference_loop(case):
    X, K, padding, stride, bias = case
    fast = corr2d_multi(X, K, padding=padding, stride=stride, bias=bias)
    assert torch.allclose(fast, corr2d_multi_reference(X, K, padding=padding, stride=stride, bias=bias), atol=1e-4)


def test_correlate_takes_the_2d_fast_paths_and_treats_a_2d_input_as_one_channel():
    X, K = X_2CH[0], K_2CH[0]
    assert torch.equal(correlate(X, K, padding=(1, 1)), corr2d(X, K, padding=(1, 1)))
    lifted = correlate(X, K[None, None], bias=[0.5])  # 1 x 1 x kh x kw kernel: one output channel
    assert lifted.shape == (1, 2, 2) and torch.allclose(lifted[0], corr2d(X, K) + 0.5)


def test_mismatched_channels_and_biases_are_refused():
    with pytest.raises(ValueError, match="has 2 input channels but X has 3"):
        corr2d_multi(torch.zeros(3, 4, 4), K_2CH)
    with pytest.raises(ValueError, match="bias has 2 values for 3 output channels"):
        corr2d_multi(X_2CH, torch.stack((K_2CH,) * 3), bias=[1.0, 2.0])


def pairs_of(kernel: torch.Tensor, count: int, size: tuple[int, int], seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn((count, kernel.shape[-3], *size), generator=generator)
    targets = torch.stack([corr2d_multi_reference(x, kernel) for x in inputs])
    return inputs, targets if kernel.dim() == 4 else targets[:, None]


def test_a_training_on_several_pairs_recovers_a_known_two_channel_kernel():
    true_kernel = torch.tensor([[[[1.0, -1.0], [0.5, 0.0]], [[0.0, 2.0], [-0.5, 1.0]]]])  # 1 x 2 x 2 x 2
    inputs, targets = pairs_of(true_kernel, count=6, size=(7, 7))
    learned = fit_kernel(inputs, targets, (1, 2, 2, 2), Training(lr=0.05, epochs=300, optimizer="adam", loss="mean"))
    assert torch.allclose(learned.kernel, true_kernel, atol=0.02), learned.kernel
    assert learned.losses[-1] < 1e-4 < learned.losses[0]


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
def test_every_optimizer_learns_a_c_x_kh_x_kw_kernel_with_minibatches(optimizer):
    true_kernel = torch.tensor([[[1.0, -1.0]], [[0.5, 0.5]]])  # 2 x 1 x 2: one output channel
    inputs, targets = pairs_of(true_kernel, count=8, size=(5, 6), seed=1)
    lr = {"sgd": 0.01, "momentum": 0.005, "adam": 0.05}[optimizer]
    training = Training(lr=lr, epochs=200, optimizer=optimizer, batch_size=3, shuffle=True, seed=4)
    learned = fit_kernel(inputs, targets, (2, 1, 2), training)
    assert learned.kernel.shape == (2, 1, 2)
    assert torch.allclose(learned.kernel, true_kernel, atol=0.05), learned.kernel


def test_equal_requests_with_a_seed_give_equal_results_and_the_seed_changes_the_shuffle():
    inputs, targets = pairs_of(torch.tensor([[[1.0, -1.0]]]), count=5, size=(4, 4))
    training = Training(lr=0.01, epochs=5, batch_size=2, shuffle=True, seed=3)
    first, again = fit_kernel(inputs, targets, (1, 1, 2), training), fit_kernel(inputs, targets, (1, 1, 2), training)
    assert first.losses == again.losses and torch.equal(first.kernel, again.kernel)
    other = fit_kernel(inputs, targets, (1, 1, 2), Training(lr=0.01, epochs=5, batch_size=2, shuffle=True, seed=4))
    assert other.losses != first.losses


def test_the_general_loop_gives_the_seeds_numbers_for_the_seeds_case():
    """One 2-D pair by autograd and torch.optim (a 1 x 1 x kh x kw kernel) vs learn_kernel's closed form."""
    X = torch.tensor([[1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0]] * 6)
    Y = corr2d(X, torch.tensor([[1.0, -1.0]]))
    seeds = learn_kernel(X, Y, (1, 2), lr=0.01, epochs=10, bias=True)
    general = fit_kernel(X[None, None], Y[None, None], (1, 1, 1, 2), Training(lr=0.01, epochs=10, bias=True))
    assert general.losses == pytest.approx(seeds.losses, rel=1e-4)
    assert general.kernel.flatten().tolist() == pytest.approx(seeds.kernel.flatten().tolist(), abs=1e-5)
    assert general.bias == pytest.approx([seeds.bias], abs=1e-5)


def test_mean_loss_is_the_sum_over_the_number_of_target_elements():
    inputs, targets = pairs_of(torch.tensor([[[1.0, -1.0]]]), count=3, size=(4, 5))
    summed = fit_kernel(inputs, targets, (1, 1, 2), Training(epochs=1, loss="sum"))
    mean = fit_kernel(inputs, targets, (1, 1, 2), Training(epochs=1, loss="mean"))
    assert mean.losses[0] == pytest.approx(summed.losses[0] / targets.numel())


def test_a_tolerance_stops_the_training_once_the_loss_is_below_it():
    inputs, targets = pairs_of(torch.tensor([[[1.0, -1.0]]]), count=2, size=(6, 6))
    learned = fit_kernel(inputs, targets, (1, 1, 2), Training(lr=0.01, epochs=5000, tolerance=1e-3))
    assert learned.converged and learned.epochs_run < 5000
    assert learned.losses[-1] < 1e-3 <= learned.losses[-2]
    X, Y = inputs[0, 0], targets[0, 0]
    seeds = learn_kernel(X, Y, (1, 2), lr=0.01, epochs=5000, tolerance=1e-3)  # the closed form stops alike
    assert seeds.converged and seeds.losses[-1] < 1e-3 <= seeds.losses[-2]


def test_on_epoch_hears_every_epoch_of_a_general_training_and_can_stop_it():
    inputs, targets = pairs_of(torch.tensor([[[1.0, -1.0]]]), count=2, size=(6, 6))
    heard = []
    learned = fit_kernel(
        inputs, targets, (1, 1, 2), Training(epochs=50), lambda epoch, loss: heard.append(loss) or epoch == 3
    )
    assert learned.losses == heard and learned.epochs_run == 3 and learned.stopped_early and not learned.converged


# Through the API and a real worker.


@pytest.mark.usefixtures("worker")
def test_chapter_multi_channel_examples_through_the_api(client):
    two_channels = correlate_job(client, {"input": X_2CH.tolist(), "kernel": K_2CH.tolist()})
    assert two_channels["result"] == {"output": [[56.0, 72.0], [104.0, 120.0]], "shape": [2, 2]}
    kernels = torch.stack((K_2CH, K_2CH + 1, K_2CH + 2)).tolist()
    body = {"input": X_2CH.tolist(), "kernel": kernels, "bias": [1, 0, -1], "result_format": "base64"}
    three = correlate_job(client, body)["result"]
    assert three["shape"] == [3, 2, 2] and three["output"]["shape"] == [3, 2, 2]
    output = np.frombuffer(base64.b64decode(three["output"]["data"]), "<f4").reshape(3, 2, 2)
    expected = [[[57, 73], [105, 121]], [[76, 100], [148, 172]], [[95, 127], [191, 223]]]
    assert output.tolist() == expected


@pytest.mark.usefixtures("worker")
def test_a_1x1_kernel_mixes_channels_pixel_by_pixel_through_the_api(client):
    mix = [[[[1.0]], [[-1.0]]], [[[0.5]], [[0.5]]]]  # 2 x 2 x 1 x 1: difference and mean of the channels
    output = correlate_job(client, {"input": X_2CH.tolist(), "kernel": mix})["result"]["output"]
    assert output == [[[-1.0] * 3] * 3, ((X_2CH[0] + X_2CH[1]) / 2).tolist()]


def two_channel_pairs(count: int) -> tuple[list[dict], torch.Tensor]:
    true_kernel = torch.tensor([[[[1.0, -1.0], [0.5, 0.0]], [[0.0, 2.0], [-0.5, 1.0]]]])
    inputs, targets = pairs_of(true_kernel, count=count, size=(6, 6), seed=7)
    pairs = [{"input": x.tolist(), "target": y.tolist()} for x, y in zip(inputs, targets, strict=True)]
    return pairs, true_kernel


@pytest.mark.usefixtures("worker")
def test_a_training_on_several_pairs_through_the_api_stops_at_its_tolerance(client):
    pairs, true_kernel = two_channel_pairs(5)
    body = {"pairs": pairs, "kernel_size": [2, 2], "optimizer": "adam", "lr": 0.05, "loss": "mean"}
    job = train(client, body | {"epochs": 2000, "tolerance": 1e-6, "batch_size": 2, "shuffle": True, "seed": 1})
    result = job["result"]
    assert job["status"] == "succeeded" and result["converged"]
    assert result["epochs_run"] < 2000 and result["loss"] < 1e-6 and job["progress"]["epoch"] == result["epochs_run"]
    assert torch.allclose(torch.tensor(result["kernel"]), true_kernel, atol=0.01)  # 1 x 2 x 2 x 2, as inferred
    again = train(client, body | {"epochs": 2000, "tolerance": 1e-6, "batch_size": 2, "shuffle": True, "seed": 1})
    assert again["result"] == result  # the same seed, the same shuffles, the same numbers


@pytest.mark.usefixtures("worker")
def test_a_training_on_pairs_streams_its_losses_and_can_be_cancelled(client):
    pairs, _ = two_channel_pairs(3)
    job = submit(
        client, "/v1/kernel-trainings", {"pairs": pairs, "kernel_shape": [1, 2, 2, 2], "lr": 1e-6, "epochs": 100_000}
    )
    wait_until(lambda: (client.get(f"/v1/jobs/{job['id']}").get_json()["progress"] or {}).get("epoch"), 30, "epochs")
    assert client.delete(f"/v1/jobs/{job['id']}").status_code in (200, 202)
    cancelled = wait_for_job(client, job["id"])
    assert cancelled["status"] == "cancelled" and 0 < cancelled["progress"]["epoch"] < 100_000
    losses = client.get(f"/v1/jobs/{job['id']}/loss").get_json()["losses"]
    assert len(losses) == cancelled["progress"]["epoch"] and losses == sorted(losses, reverse=True)
    stream = client.get(f"/v1/jobs/{job['id']}/events").get_data(as_text=True)  # ends at the status event
    progress = [json.loads(line[6:]) for line in stream.splitlines() if line.startswith('data: {"epoch"')]
    assert [event["epoch"] for event in progress] == list(range(1, len(losses) + 1))
    assert [event["loss"] for event in progress] == losses and stream.count("event: status") == 1


def test_validation_names_the_mismatched_dimension(client):
    body = {"input": X_2CH.tolist(), "kernel": [K_2CH[0].tolist()] * 3}
    [error] = client.post("/v1/correlations", json=body).get_json()["errors"]
    assert error["loc"] == "/kernel"
    assert error["msg"] == (
        "kernel is 3 x 2 x 2: 3 input channels in its dimension 0, "
        "but the input's channels are 2 (dimension 0 of its 2 x 3 x 3)"
    )
    body = {"input": X_2CH.tolist(), "kernel": [K_2CH.tolist()] * 2, "bias": [1.0, 2.0, 3.0]}
    [error] = client.post("/v1/correlations", json=body).get_json()["errors"]
    assert error["msg"] == "bias has 3 values but the kernel has 2 output channels (dimension 0 of its 2 x 2 x 2 x 2)"


def test_the_openapi_document_takes_channels_and_pairs(client):
    schemas = client.get("/openapi.json").get_json()["components"]["schemas"]

    def depths(field: dict) -> set[int]:
        found = set()
        for form in field["anyOf"]:
            depth, node = 0, form
            while node.get("type") == "array":
                depth, node = depth + 1, node["items"]
            found.add(depth)
        return found - {0}  # the base64 form is an object

    correlation = schemas["CorrelationRequest"]["properties"]
    assert depths(correlation["input"]) == {2, 3} and depths(correlation["kernel"]) == {2, 3, 4}
    training = schemas["KernelTrainingRequest"]["properties"]
    assert {"pairs", "kernel_shape", "optimizer", "loss", "tolerance", "batch_size", "shuffle"} <= training.keys()
    assert "TrainingPair" in schemas
