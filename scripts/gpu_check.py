"""Check the core on CUDA against the CPU: every correlation path, channels, and trainings, on random data.

    python -m scripts.gpu_check        # from the repository root; exits 0 with "no GPU" where CUDA is not

Prints one line per check with the largest difference seen, and exits 1 if any is over its tolerance.
"""

import sys

import torch

from services import Training, corr2d, corr2d_multi, fit_kernel, learn_kernel

# float32 on different hardware: sums in another order differ in the last bits, relative to the values' size.
TOLERANCE = 1e-4


def differences(cuda: torch.device) -> dict[str, float]:
    """Largest relative difference between CUDA's and the CPU's answer, per check."""
    generator = torch.Generator().manual_seed(0)
    X = torch.randn((300, 260), generator=generator)
    checks = {}
    for kernel_shape, stride in [((3, 3), (1, 1)), ((11, 11), (1, 1)), ((1, 31), (2, 1)), ((5, 5), (2, 3))]:
        K = torch.randn(kernel_shape, generator=generator)
        on_cpu = corr2d(X, K, padding=(1, 2), stride=stride, bias=0.5)
        on_gpu = corr2d(X.to(cuda), K.to(cuda), padding=(1, 2), stride=stride, bias=0.5).cpu()
        checks[f"corr2d {kernel_shape} stride {stride}"] = _relative(on_gpu, on_cpu)
    X3, K4 = torch.randn((3, 64, 64), generator=generator), torch.randn((4, 3, 5, 5), generator=generator)
    checks["corr2d_multi 3 -> 4 channels"] = _relative(
        corr2d_multi(X3.to(cuda), K4.to(cuda)).cpu(), corr2d_multi(X3, K4)
    )
    Y = corr2d(X[:64, :64], torch.tensor([[1.0, -1.0]]))
    seeds = [
        learn_kernel(x, y, (1, 2), lr=1e-3, epochs=50)
        for x, y in [(X[:64, :64], Y), (X[:64, :64].to(cuda), Y.to(cuda))]
    ]
    checks["learn_kernel, the seed's loop"] = _relative(torch.tensor(seeds[1].losses), torch.tensor(seeds[0].losses))
    inputs = torch.randn((6, 3, 16, 16), generator=generator)
    targets = torch.stack([corr2d_multi(x, K4) for x in inputs])
    training = Training(lr=0.01, epochs=30, optimizer="adam", loss="mean", batch_size=2, shuffle=True)
    fits = [
        fit_kernel(i, t, (4, 3, 5, 5), training) for i, t in [(inputs, targets), (inputs.to(cuda), targets.to(cuda))]
    ]
    checks["fit_kernel, adam on pairs"] = _relative(fits[1].kernel, fits[0].kernel)
    return checks


def _relative(got: torch.Tensor, expected: torch.Tensor) -> float:
    return float((got - expected).abs().max() / expected.abs().max().clamp_min(1e-12))


def main() -> int:
    if not torch.cuda.is_available():
        print("no GPU: CUDA is not available to torch here; nothing to check")
        return 0
    cuda = torch.device("cuda")
    print(f"checking {torch.cuda.get_device_name(cuda)} against the CPU (torch {torch.__version__})")
    failed = False
    for name, difference in differences(cuda).items():
        ok = difference <= TOLERANCE
        failed |= not ok
        print(f"{'ok  ' if ok else 'FAIL'} {name}: largest relative difference {difference:.2e}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
