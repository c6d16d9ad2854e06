"""Peak memory readings shared by the trainer's log and the benchmark."""
from __future__ import annotations

import resource

import torch

__all__ = ["rss_peak_mib", "cuda_peak_mib", "peak_memory_mib"]


def rss_peak_mib() -> float:
    """Peak resident set size of this process so far (``ru_maxrss``, KiB on Linux), in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cuda_peak_mib(device: torch.device) -> float | None:
    """``torch.cuda.max_memory_allocated`` on ``device`` in MiB since the last reset; None off CUDA."""
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def peak_memory_mib(device: torch.device) -> float:
    """The peak that matters on ``device``: CUDA memory allocated on a GPU, the process's RSS on a CPU."""
    cuda = cuda_peak_mib(device)
    return rss_peak_mib() if cuda is None else cuda
