"""Where tensors live: CPU by default, CUDA when it is there and allowed."""

from typing import Literal

import torch

DevicePreference = Literal["auto", "cpu", "cuda"]


def pick_device(preference: DevicePreference = "auto") -> torch.device:
    """Return the device to compute on; "cuda" without a GPU is an error, "auto" falls back to CPU."""
    if preference == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("TORCH_DEVICE=cuda but this worker has no usable CUDA device")
    if preference == "auto":
        preference = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(preference)
