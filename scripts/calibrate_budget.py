"""Measure what jobs cost on this machine's worker processes, beside what shared/budget.py estimates for them.

Usage: python scripts/calibrate_budget.py [--rounds 3]
Runs each job as a worker process does (one torch thread per process on 2 cores with 2 processes: pass
--threads to match yours) and prints, per job, the slowest measured time, the estimate and their ratio.
Every ratio should stay above 1 (the estimate errs long); when the hardware changes, adjust CPU_SPEED in
shared/budget.py until they do, with a margin for a loaded machine.
"""

import argparse
import base64
import time

import numpy as np
import torch

from shared.request_models import CorrelationRequest, KernelTrainingRequest
from worker.compute import correlate, train


def _matrix(shape: tuple[int, ...], seed: int = 0) -> dict:
    array = np.random.default_rng(seed).random(shape, dtype=np.float32)
    return {"shape": list(shape), "dtype": "float32", "data": base64.b64encode(array).decode()}


def _pairs(count: int, shape: tuple[int, ...], kernel: tuple[int, ...]) -> dict:
    return {"pairs": [{"input": _matrix(shape, i)} for i in range(count)], "target_kernel": _matrix(kernel, 99)}


JOBS = {
    "correlation 1024x1024 by 3x3": ("c", {"input": _matrix((1024, 1024)), "kernel": _matrix((3, 3))}),
    "correlation 1024x1024 by 31x31": ("c", {"input": _matrix((1024, 1024)), "kernel": _matrix((31, 31))}),
    "correlation 3x256x256 by 8x3x5x5": ("c", {"input": _matrix((3, 256, 256)), "kernel": _matrix((8, 3, 5, 5))}),
    "seed training 8x8 by 2x2, 3000 epochs": (
        "t",
        {"input": _matrix((8, 8)), "target_kernel": _matrix((2, 2)), "epochs": 3000, "lr": 1e-6},
    ),
    "seed training 512x512 by 3x3, 100 epochs": (
        "t",
        {"input": _matrix((512, 512)), "target_kernel": _matrix((3, 3)), "epochs": 100, "lr": 1e-9},
    ),
    "seed training 128x128 by 32x32, 30 epochs": (
        "t",
        {"input": _matrix((128, 128)), "target_kernel": _matrix((32, 32)), "epochs": 30, "lr": 1e-9},
    ),
    "1000 pairs of 2x2 by 2x2, batches of 1, 2 epochs": (
        "t",
        {**_pairs(1000, (2, 2), (2, 2)), "batch_size": 1, "epochs": 2, "lr": 1e-6},
    ),
    "1000 pairs of 2x2 by 2x2, batches of 1, adam, 2 epochs": (
        "t",
        {**_pairs(1000, (2, 2), (2, 2)), "batch_size": 1, "epochs": 2, "optimizer": "adam", "lr": 1e-6},
    ),
    "16 pairs of 3x64x64 by 4x3x3x3, batches of 4, adam, 20 epochs": (
        "t",
        {**_pairs(16, (3, 64, 64), (4, 3, 3, 3)), "batch_size": 4, "epochs": 20, "optimizer": "adam", "lr": 1e-6},
    ),
    "4 pairs of 512x512 by 9x9, momentum, 5 epochs": (
        "t",
        {**_pairs(4, (512, 512), (9, 9)), "epochs": 5, "optimizer": "momentum", "lr": 1e-9},
    ),
    "one 2048x2048 pair by 2x1, adam, 3 epochs": (
        "t",
        {"input": _matrix((2048, 2048)), "target_kernel": _matrix((2, 1)), "epochs": 3, "optimizer": "adam"},
    ),
    "one 1024x1024 pair by 5x5, mean loss, 10 epochs": (
        "t",
        {"input": _matrix((1024, 1024)), "target_kernel": _matrix((5, 5)), "epochs": 10, "loss": "mean", "lr": 1e-6},
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    print(f"{'job':<64} {'measured':>10} {'estimate':>10} {'ratio':>7}")
    for name, (kind, body) in JOBS.items():
        model = CorrelationRequest if kind == "c" else KernelTrainingRequest
        request = model.model_validate(body)
        slowest = 0.0
        for _ in range(args.rounds):
            started = time.perf_counter()
            if kind == "c":
                correlate(request, device)
            else:
                train(request, device, lambda epoch, loss: False)
            slowest = max(slowest, time.perf_counter() - started)
        estimate = request.estimated_seconds
        print(f"{name:<64} {slowest:>9.3f}s {estimate:>9.3f}s {estimate / slowest:>6.2f}x", flush=True)


if __name__ == "__main__":
    main()
