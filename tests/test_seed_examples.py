"""The seed's worked examples, computed by the core: the reference loop and the fast path users run."""

import pytest
import torch
from torch import nn

from services import Conv2D, corr2d, corr2d_reference, learn_kernel
from tests.seed import EDGE_IMAGE, EDGE_KERNEL, EDGES, K_2X2, TRANSPOSED_EDGES, X_3X3, Y_3X3

t = torch.tensor


@pytest.mark.parametrize("correlate", [corr2d_reference, corr2d], ids=["reference loop", "fast path"])
def test_seed_3x3_example(correlate):
    assert correlate(t(X_3X3), t(K_2X2)).tolist() == Y_3X3


@pytest.mark.parametrize("correlate", [corr2d_reference, corr2d], ids=["reference loop", "fast path"])
def test_seed_edge_detection_finds_vertical_edges(correlate):
    Y = correlate(t(EDGE_IMAGE), t(EDGE_KERNEL))
    assert Y.shape == (6, 7)
    assert Y.tolist() == EDGES  # 1: white to black (column 1), -1: black to white (column 5)


@pytest.mark.parametrize("correlate", [corr2d_reference, corr2d], ids=["reference loop", "fast path"])
def test_seed_transposed_image_has_no_edges(correlate):
    Y = correlate(t(EDGE_IMAGE).T, t(EDGE_KERNEL))
    assert Y.shape == (8, 5)
    assert Y.tolist() == TRANSPOSED_EDGES


def test_seed_conv2d_layer_has_weight_and_bias_and_adds_the_bias():
    layer = Conv2D((1, 2))
    assert {name for name, _ in layer.named_parameters()} == {"weight", "bias"}
    assert layer.weight.shape == (1, 2) and layer.weight.requires_grad
    assert layer.weight.min() >= 0 and layer.weight.max() < 1  # torch.rand, as in the seed
    assert layer.bias.tolist() == [0.0]
    with torch.no_grad():
        layer.bias.fill_(0.5)
    X = t(EDGE_IMAGE)
    assert torch.allclose(layer(X), corr2d_reference(X, layer.weight.detach()) + 0.5)


def test_seed_learns_the_edge_kernel_with_the_loss_falling():
    X, Y = t(EDGE_IMAGE), t(EDGES)
    learned = learn_kernel(X, Y, (1, 2), lr=0.03, epochs=20)
    assert learned.epochs_run == 20
    every_second = learned.losses[1::2]  # what the seed prints: epoch 2, 4, ..., 20
    assert all(later < earlier for earlier, later in zip(every_second, every_second[1:], strict=False))
    assert learned.losses[-1] < 0.05
    assert learned.kernel.shape == (1, 2)
    assert torch.allclose(learned.kernel, t(EDGE_KERNEL), atol=0.05)  # the seed shows [[0.9972, -1.0026]]


def test_learning_matches_the_seeds_nn_conv2d_loop_step_for_step():
    """From the same initial kernel, the core's loop and the seed's nn.Conv2d loop give the same losses."""
    X, Y = t(EDGE_IMAGE), t(EDGES)
    learned = learn_kernel(X, Y, (1, 2), seed=7)

    conv2d = nn.Conv2d(1, 1, kernel_size=(1, 2), bias=False)
    with torch.no_grad():
        conv2d.weight[:] = torch.rand((1, 2), generator=torch.Generator().manual_seed(7))
    X4, Y4 = X.reshape((1, 1, 6, 8)), Y.reshape((1, 1, 6, 7))
    seed_losses = []
    for _ in range(20):
        Y_hat = conv2d(X4)
        l = (Y_hat - Y4) ** 2  # noqa: E741 (the seed's own name)
        conv2d.zero_grad()
        l.sum().backward()
        conv2d.weight.data[:] -= 3e-2 * conv2d.weight.grad
        seed_losses.append(l.sum().item())

    assert learned.losses == pytest.approx(seed_losses, rel=1e-5)
    assert torch.allclose(learned.kernel, conv2d.weight.data.reshape((1, 2)), atol=1e-6)
