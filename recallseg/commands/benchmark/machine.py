"""The machine a benchmark ran on: every section's numbers are only comparable on the same one."""

from __future__ import annotations

import os
import platform

import cv2
import numpy as np
import torch


def machine_info(device: torch.device) -> dict:
    """The machine a run measured, for every section's JSON."""
    info = {
        "platform": platform.platform(), "processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
        "python": platform.python_version(), "torch": torch.__version__, "opencv": cv2.__version__, "numpy": np.__version__,
        "device": str(device), "load_average": load_average(),
    }  # fmt: skip
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    else:
        info["threads"] = torch.get_num_threads()
    return info


def load_average() -> list[float] | None:
    """The machine's 1/5/15-minute load: on a shared CPU the timings mean little when it exceeds the cores."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
