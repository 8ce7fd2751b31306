"""The core beyond the seed's examples: fast path against the reference loop, training options, devices."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from services import TrainingDiverged, corr2d, corr2d_reference, learn_kernel, output_shape, pick_device
from services.corr2d import conv2d, shift_add, strategy


@st.composite
def correlation_cases(draw):
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    ph, pw = draw(st.integers(0, 3)), draw(st.integers(0, 3))
    h = draw(st.integers(max(1, kh - 2 * ph), 12))
    w = draw(st.integers(max(1, kw - 2 * pw), 12))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    seed = draw(st.integers(0, 2**31))
    bias = draw(st.floats(-10, 10))
    generator = torch.Generator().manual_seed(seed)
    return torch.randn((h, w), generator=generator), torch.randn((kh, kw), generator=generator), (ph, pw), stride, bias


@settings(max_examples=150, deadline=None)
@given(correlation_cases())
def test_fast_path_equals_the_reference_loop(case):
    X, K, padding, stride, bias = case
    expected = corr2d_reference(X, K, padding=padding, stride=stride, bias=bias)
    assert expected.shape == output_shape(tuple(X.shape), tuple(K.shape), padding, stride)
    for actual in (
        corr2d(X, K, padding=padding, stride=stride, bias=bias),
        shift_add(X, K, padding, stride) + bias,
        conv2d(X, K, padding, stride) + bias,
    ):
        assert actual.shape == expected.shape
        assert torch.allclose(actual, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "size,kernel,path", [(150, 3, "shift_add"), (150, 9, "shift_add"), (20, 3, "conv2d"), (80, 33, "conv2d")]
)
def test_every_fast_strategy_agrees_with_torch_conv2d(size, kernel, path):
    generator = torch.Generator().manual_seed(size)
    X, K = torch.randn((size, size), generator=generator), torch.randn((kernel, kernel), generator=generator)
    expected = F.conv2d(X[None, None], K[None, None], padding=1, stride=(1, 2))[0, 0]
    assert strategy(tuple(expected.shape), (kernel, kernel)) == path
    assert torch.allclose(corr2d(X, K, padding=(1, 1), stride=(1, 2)), expected, rtol=1e-4, atol=1e-4)


def test_fast_path_is_differentiable_in_input_kernel_and_bias():
    X = torch.randn((9, 11), requires_grad=True)
    K = torch.randn((3, 2), requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    corr2d(X, K, padding=(1, 0), stride=(2, 1), bias=b).square().sum().backward()
    X2, K2, b2 = (v.detach().clone().requires_grad_() for v in (X, K, b))
    (F.conv2d(X2[None, None], K2[None, None], padding=(1, 0), stride=(2, 1))[0, 0] + b2).square().sum().backward()
    for ours, torchs in [(X, X2), (K, K2), (b, b2)]:
        assert torch.allclose(ours.grad, torchs.grad, rtol=1e-4, atol=1e-4)


def test_a_kernel_larger_than_the_padded_input_is_refused():
    with pytest.raises(ValueError, match="larger than the padded input"):
        corr2d(torch.ones((2, 2)), torch.ones((3, 1)))


def test_equal_seeds_give_equal_trainings_and_different_seeds_differ():
    X = torch.randn((10, 10), generator=torch.Generator().manual_seed(1))
    Y = corr2d(X, torch.tensor([[1.0, -2.0], [0.5, 0.0]]))
    first, again = (learn_kernel(X, Y, (2, 2), lr=0.005, epochs=15, seed=3) for _ in range(2))
    other = learn_kernel(X, Y, (2, 2), lr=0.005, epochs=15, seed=4)
    assert first.losses == again.losses and torch.equal(first.kernel, again.kernel)
    assert first.losses[0] != other.losses[0]


def test_a_learned_bias_recovers_an_offset():
    X = torch.randn((12, 12), generator=torch.Generator().manual_seed(2))
    Y = corr2d(X, torch.tensor([[0.5, -0.5]])) + 2.0
    learned = learn_kernel(X, Y, (1, 2), lr=0.003, epochs=300, bias=True)
    assert learned.bias == pytest.approx(2.0, abs=0.02)
    assert learned.kernel.tolist()[0] == pytest.approx([0.5, -0.5], abs=0.02)
    assert learn_kernel(X, Y, (1, 2), epochs=1).bias is None


def test_on_epoch_hears_every_loss_and_can_stop_the_training():
    X = torch.randn((8, 8), generator=torch.Generator().manual_seed(5))
    Y = corr2d(X, torch.tensor([[1.0, -1.0]]))
    heard = []
    learned = learn_kernel(
        X, Y, (1, 2), lr=0.01, epochs=50, on_epoch=lambda epoch, loss: heard.append((epoch, loss)) or epoch == 4
    )
    assert [epoch for epoch, _ in heard] == [1, 2, 3, 4]
    assert learned.losses == [loss for _, loss in heard]
    assert learned.stopped_early and learned.epochs_run == 4


def test_divergence_is_reported_not_returned_as_nan():
    X = torch.randn((128, 128), generator=torch.Generator().manual_seed(6))
    Y = corr2d(X, torch.randn((3, 3), generator=torch.Generator().manual_seed(7)))
    reported = []
    with pytest.raises(
        TrainingDiverged, match=r"training diverged at epoch \d+: loss became (inf|nan); lower lr"
    ) as raised:
        learn_kernel(X, Y, (3, 3), lr=0.03, epochs=100, on_epoch=lambda epoch, loss: reported.append(loss) and False)
    assert all(math.isfinite(loss) for loss in reported)
    assert raised.value.epoch == len(reported) + 1


def test_the_device_is_cpu_unless_cuda_is_there_and_allowed():
    assert pick_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert pick_device("auto").type == expected
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no usable CUDA"):
            pick_device("cuda")
