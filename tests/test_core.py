"""The core beyond the seed's examples: fast path against the reference loop, training options, devices."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import example, given, settings
from hypothesis import strategies as st

from services import TrainingDiverged, corr2d, corr2d_reference, learn_kernel, output_shape, pick_device, strategy
from services.corr2d import band_conv, conv2d, shift_add
from services.learn import SquaredError


@st.composite
def correlation_cases(draw):
    """Odd shapes, 1xN and Nx1 kernels, kernels as large as the padded input, transposed (strided) inputs."""
    kh, kw = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    ph, pw = draw(st.integers(0, 3)), draw(st.integers(0, 3))
    h = draw(st.integers(max(1, kh - 2 * ph), 20))
    w = draw(st.integers(max(1, kw - 2 * pw), 20))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    seed = draw(st.integers(0, 2**31))
    bias = draw(st.floats(-10, 10))
    generator = torch.Generator().manual_seed(seed)
    X = torch.randn((w, h), generator=generator).T if draw(st.booleans()) else torch.randn((h, w), generator=generator)
    return X, torch.randn((kh, kw), generator=generator), (ph, pw), stride, bias


def every_path(X, K, padding, stride, bias):
    """What each path computes for this case: corr2d's choice, corr2d under autograd, and each path by name."""
    yield "corr2d", corr2d(X, K, padding=padding, stride=stride, bias=bias)
    yield "corr2d with grad", corr2d(X, K.clone().requires_grad_(), padding=padding, stride=stride, bias=bias)
    yield "conv2d", conv2d(X, K, padding, stride) + bias
    yield "shift_add", shift_add(X, K, padding, stride, bias)
    yield "band_conv", band_conv(X, K, padding, stride, bias)


@settings(max_examples=300, deadline=None)
@given(correlation_cases())
@example((torch.ones((1, 9)), torch.arange(4.0)[None], (0, 0), (1, 1), 0.5))  # 1xN kernel
@example((torch.ones((9, 1)), torch.arange(4.0)[:, None], (0, 0), (1, 1), 0.5))  # Nx1 kernel
@example((torch.randn((5, 11)), torch.randn((5, 11)), (0, 0), (1, 1), 0.0))  # the kernel fills the input
@example((torch.randn((3, 9)), torch.randn((5, 13)), (1, 2), (1, 1), 1.0))  # ... the padded input
def test_every_path_equals_the_reference_loop(case):
    X, K, padding, stride, bias = case
    expected = corr2d_reference(X, K, padding=padding, stride=stride, bias=bias)
    assert expected.shape == output_shape(tuple(X.shape), tuple(K.shape), padding, stride)
    for path, actual in every_path(X, K, padding, stride, bias):
        assert actual.shape == expected.shape, path
        assert torch.allclose(actual, expected, rtol=1e-5, atol=1e-5), path


@pytest.mark.parametrize(
    "out_shape,kernel,stride,path",
    [
        ((16, 16), (3, 3), (1, 1), "conv2d"),  # small: one call beats one pass per tap
        ((12, 12), (11, 11), (1, 1), "conv2d"),
        ((1022, 1022), (1, 3), (1, 1), "shift_add"),  # few taps: a few memory-bound passes
        ((1014, 1014), (11, 11), (1, 1), "band_conv"),  # many taps: one vectorised pass
        ((256, 256), (11, 11), (2, 1), "band_conv"),
        ((500, 500), (3, 3), (1, 2), "band_conv"),
    ],
)
def test_strategy_names_the_cheapest_path_measured(out_shape, kernel, stride, path):
    assert strategy(out_shape, kernel, stride) == path
    assert strategy(out_shape, kernel, stride, grad=True) == "conv2d"


@pytest.mark.parametrize(
    "size,kernel,stride,path",
    [
        (400, 3, (1, 1), "shift_add"),
        (150, 9, (2, 1), "band_conv"),
        (80, 33, (1, 1), "band_conv"),
        (20, 3, (1, 1), "conv2d"),
        (150, 3, (1, 2), "conv2d"),
    ],
)
def test_corr2d_takes_the_path_strategy_names(size, kernel, stride, path):
    generator = torch.Generator().manual_seed(size)
    X, K = torch.randn((size, size), generator=generator), torch.randn((kernel, kernel), generator=generator)
    expected = F.conv2d(X[None, None], K[None, None], padding=1, stride=stride)[0, 0]
    assert strategy(tuple(expected.shape), (kernel, kernel), stride) == path
    by_name = {
        "conv2d": lambda: conv2d(X, K, (1, 1), stride),
        "shift_add": lambda: shift_add(X, K, (1, 1), stride),
        "band_conv": lambda: band_conv(X, K, (1, 1), stride),
    }
    actual = corr2d(X, K, padding=(1, 1), stride=stride)
    assert torch.equal(actual, by_name[path]())
    assert torch.allclose(actual, expected, rtol=1e-4, atol=1e-4)


def test_fast_path_is_differentiable_in_input_kernel_and_bias():
    X = torch.randn((300, 310), requires_grad=True)
    K = torch.randn((3, 2), requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    assert strategy(output_shape((300, 310), (3, 2), (1, 0)), (3, 2)) != "conv2d"  # it would not be, without grad
    corr2d(X, K, padding=(1, 0), bias=b).square().sum().backward()
    X2, K2, b2 = (v.detach().clone().requires_grad_() for v in (X, K, b))
    (F.conv2d(X2[None, None], K2[None, None], padding=(1, 0))[0, 0] + b2).square().sum().backward()
    for ours, torchs in [(X, X2), (K, K2), (b, b2)]:
        assert torch.allclose(ours.grad, torchs.grad, rtol=1e-4, atol=1e-4)


def test_under_no_grad_the_fast_paths_serve_tensors_that_require_grad():
    X, K = torch.randn((300, 300)), torch.randn((3, 3), requires_grad=True)
    with torch.no_grad():
        Y = corr2d(X, K, bias=torch.tensor(0.5))
    assert not Y.requires_grad
    assert torch.allclose(Y, F.conv2d(X[None, None], K.detach()[None, None])[0, 0] + 0.5, rtol=1e-4, atol=1e-4)


@st.composite
def training_cases(draw):
    kh, kw = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    h, w = draw(st.integers(kh, 30)), draw(st.integers(kw, 30))
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**31)))
    X, K = torch.randn((h, w), generator=generator), torch.randn((kh, kw), generator=generator)
    Y = torch.randn((h - kh + 1, w - kw + 1), generator=generator)
    return X, Y, K, draw(st.floats(-3, 3))


@settings(max_examples=150, deadline=None)
@given(training_cases())
def test_the_closed_form_gradient_is_autograds(case):
    X, Y, K, b = case
    loss, kernel_grad, bias_grad = SquaredError(X, Y, tuple(K.shape)).loss_and_gradients(K, torch.tensor(b))
    K2, b2 = K.clone().requires_grad_(), torch.tensor(b, requires_grad=True)
    expected = ((F.conv2d(X[None, None], K2[None, None])[0, 0] + b2 - Y) ** 2).sum()
    expected.backward()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-5)
    assert torch.allclose(kernel_grad, K2.grad, rtol=1e-4, atol=1e-3)
    assert bias_grad.item() == pytest.approx(b2.grad.item(), rel=1e-4, abs=1e-3)


def test_learning_with_a_bias_matches_autograd_through_nn_conv2d_step_for_step():
    """The seed's loop through torch's own layer (with a bias), 60x70 input: the same losses and parameters."""
    generator = torch.Generator().manual_seed(11)
    X = torch.randn((60, 70), generator=generator)
    Y = corr2d(X, torch.randn((3, 3), generator=generator)) + 0.7 + 0.1 * torch.randn((58, 68), generator=generator)
    learned = learn_kernel(X, Y, (3, 3), lr=1e-4, epochs=25, bias=True, seed=5)

    layer = torch.nn.Conv2d(1, 1, kernel_size=(3, 3))
    with torch.no_grad():
        layer.weight[:] = torch.rand((3, 3), generator=torch.Generator().manual_seed(5))
        layer.bias.zero_()
    seed_losses = []
    for _ in range(25):
        loss = ((layer(X[None, None]) - Y[None, None]) ** 2).sum()
        layer.zero_grad()
        loss.backward()
        with torch.no_grad():
            for parameter in layer.parameters():
                parameter -= 1e-4 * parameter.grad
        seed_losses.append(loss.item())
    assert learned.losses == pytest.approx(seed_losses, rel=1e-5)
    assert torch.allclose(learned.kernel, layer.weight.detach()[0, 0], rtol=1e-5, atol=1e-6)
    assert learned.bias == pytest.approx(layer.bias.item(), rel=1e-5, abs=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_gives_the_cpus_results():
    generator = torch.Generator().manual_seed(12)
    X, K = torch.randn((200, 300), generator=generator), torch.randn((5, 5), generator=generator)
    cuda = torch.device("cuda")
    for padding, stride in [((0, 0), (1, 1)), ((2, 1), (2, 1)), ((1, 1), (1, 3))]:
        expected = corr2d(X, K, padding=padding, stride=stride, bias=0.25)
        actual = corr2d(X.to(cuda), K.to(cuda), padding=padding, stride=stride, bias=0.25)
        assert torch.allclose(actual.cpu(), expected, rtol=1e-4, atol=1e-3)
    for path in (shift_add, band_conv):
        on_cuda = path(X.to(cuda), K.to(cuda), (1, 1), (2, 1), 0.5).cpu()
        assert torch.allclose(on_cuda, path(X, K, (1, 1), (2, 1), 0.5), rtol=1e-4, atol=1e-3)
    Y = corr2d(X, K) + 0.5
    on_cpu = learn_kernel(X, Y, (5, 5), lr=1e-6, epochs=10, bias=True)
    on_cuda = learn_kernel(X, Y, (5, 5), lr=1e-6, epochs=10, bias=True, device=cuda)
    assert on_cuda.kernel.device.type == "cpu"
    assert on_cuda.losses == pytest.approx(on_cpu.losses, rel=1e-4)
    assert torch.allclose(on_cuda.kernel, on_cpu.kernel, rtol=1e-4, atol=1e-5)


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
