"""Memory in use: this process on the CPU side, and each visible GPU."""

from __future__ import annotations

import os

import psutil
import torch

_GB = 1024**3


def gpu_memory(index: int) -> dict:
    """Total and used memory of GPU ``index`` in GB (the whole device, all processes)."""
    free, total = torch.cuda.mem_get_info(index)
    return {"index": index, "total_memory": round(total / _GB, 2), "used_memory": round((total - free) / _GB, 2)}


def get_resource_usage(device: str | torch.device | None = None, num_gpus: int | None = None) -> dict:
    """Memory usage in the ChatStream 0.3 shape: ``{"num_gpus", "cpu": {...}, "gpus": [...]}`` (GB).

    ``cpu.used_memory`` is this process's resident memory; ``gpus`` lists every visible CUDA device
    when the model runs on CUDA (none on CPU or MPS).
    """
    rss = psutil.Process(os.getpid()).memory_info().rss
    usage = {
        "num_gpus": num_gpus,
        "cpu": {"total_memory": round(psutil.virtual_memory().total / _GB, 2), "used_memory": round(rss / _GB, 2)},
        "gpus": [],
    }
    on_cuda = device is not None and torch.device(device).type == "cuda"
    if on_cuda and torch.cuda.is_available():
        usage["gpus"] = [gpu_memory(i) for i in range(torch.cuda.device_count())]
        if usage["num_gpus"] is None:
            usage["num_gpus"] = len(usage["gpus"])
    return usage
