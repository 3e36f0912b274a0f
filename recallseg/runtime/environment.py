"""What a run ran on: recallseg's code, the library versions, the machine, the command.

Collected once when a run starts and once when it ends (time and peak memory), never inside the
step. Reading a value never fails a run: one that cannot be read is recorded as ``"unknown"``,
and ``None`` means that it does not apply (no git checkout, no GPU). Nothing here calls
``torch.cuda`` unless the run's device is a GPU, since a CPU run must not initialise CUDA, and
nothing reaches the network: versions come from the installed packages' metadata and the commit
from a local ``git``.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

if TYPE_CHECKING:
    from recallseg.runtime.device import Runtime

UNKNOWN = "unknown"

# The distributions behind the numbers a run produces; the first installed name of each counts.
PACKAGES = {
    "torchvision": ("torchvision",),
    "segmentation-models-pytorch": ("segmentation-models-pytorch",),
    "albumentations": ("albumentations",),
    "hydra-core": ("hydra-core",),
    "omegaconf": ("omegaconf",),
    "opencv": ("opencv-python-headless", "opencv-python", "opencv-contrib-python-headless", "opencv-contrib-python"),
    "numpy": ("numpy",),
}
OPTIONAL_PACKAGES = {"triton": ("triton", "pytorch-triton"), "onnxruntime": ("onnxruntime", "onnxruntime-gpu")}


def readable(read: Callable[[], Any]) -> Any:
    """``read()``, or ``"unknown"`` when it raises: a missing detail must not cost the run."""
    try:
        return read()
    except Exception:
        return UNKNOWN


def installed_version(names: tuple[str, ...]) -> str | None:
    """The version of the first installed distribution of ``names`` (None: none is installed)."""
    from importlib import metadata

    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def versions(device_type: str) -> dict[str, Any]:
    """Python, torch (with the CUDA it was built for, and cuDNN on a GPU run) and the libraries of ``PACKAGES``,
    plus those of ``OPTIONAL_PACKAGES`` that are installed."""
    import torch

    found: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": readable(lambda: torch.version.cuda),
        # Asking for cuDNN's version loads the library: only where the run uses it.
        "cudnn": readable(lambda: str(torch.backends.cudnn.version())) if device_type == "cuda" else None,
    }
    for key, names in PACKAGES.items():
        found[key] = readable(lambda: installed_version(names) or UNKNOWN)
    for key, names in OPTIONAL_PACKAGES.items():
        version = readable(lambda: installed_version(names))
        if version is not None:
            found[key] = version
    return found


def _git(root: Path, *args: str) -> str | None:
    try:
        # --no-optional-locks: a status must not take the index lock from the user's own git commands.
        result = subprocess.run(["git", "--no-optional-locks", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def code_version(root: Path | None = None) -> dict[str, Any]:
    """recallseg's version and, when it runs from a git checkout, the commit and whether tracked files
    differ from it (``git_dirty``; files git does not track do not count)."""
    import recallseg

    root = Path(recallseg.__file__).resolve().parent.parent if root is None else root
    record: dict[str, Any] = {"recallseg": recallseg.__version__, "git_commit": None, "git_dirty": None}
    if not (root / ".git").exists():  # an installed package: there is no checkout to name
        return record
    commit = _git(root, "rev-parse", "HEAD")
    status = _git(root, "status", "--porcelain", "--untracked-files=no")
    record["git_commit"] = commit or UNKNOWN
    record["git_dirty"] = UNKNOWN if status is None else bool(status)
    return record


def cpu_model() -> str:
    """The processor's name as the kernel reports it (``platform.processor()`` is empty on most Linux systems)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Hardware", "cpu model") and value.strip():
                return value.strip()
    return platform.processor() or platform.machine() or UNKNOWN


def gpu_driver() -> str:
    """The NVIDIA driver's version, from the kernel module, else from ``nvidia-smi``."""
    version_file = Path("/proc/driver/nvidia/version")
    if version_file.is_file():
        found = re.search(r"Kernel Module\s+(\S+)", version_file.read_text(errors="replace"))
        if found:
            return found.group(1)
    result = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True, text=True, timeout=10)
    return result.stdout.strip().splitlines()[0] if result.returncode == 0 and result.stdout.strip() else UNKNOWN


def precision_name(runtime: Runtime) -> str:
    return str(runtime.amp_dtype).removeprefix("torch.") if runtime.amp_dtype is not None else "float32"


def machine(runtime: Runtime) -> dict[str, Any]:
    """The CPU (always: it feeds the data), the GPU on a GPU run, and how the run used them."""
    import torch

    device = runtime.device
    record: dict[str, Any] = {
        "platform": readable(platform.platform),
        "cpu": readable(cpu_model),
        "cpu_cores": readable(os.cpu_count),
        "usable_cores": readable(lambda: len(os.sched_getaffinity(0))),
        "torch_threads": readable(torch.get_num_threads),
        "device": str(device),
        "processes": runtime.world_size,
        "precision": precision_name(runtime),
        "channels_last": bool(runtime.channels_last),
    }
    if device.type == "cuda":
        properties = readable(lambda: torch.cuda.get_device_properties(device))
        record["gpu"] = readable(lambda: properties.name)
        record["gpu_memory_gib"] = readable(lambda: round(properties.total_memory / 2**30, 1))
        record["gpu_capability"] = readable(lambda: f"{properties.major}.{properties.minor}")
        record["gpu_driver"] = readable(gpu_driver)
    return record


def environment(runtime: Runtime) -> dict[str, Any]:
    """The ``code``, ``versions``, ``machine`` and ``command`` parts of a run's record."""
    return {
        "code": readable(code_version),
        "versions": readable(lambda: versions(runtime.device.type)),
        "machine": readable(lambda: machine(runtime)),
        # As typed: evaluate.py hands Hydra its own arguments only, by rewriting sys.argv.
        "command": readable(lambda: shlex.join(sys.orig_argv)),
        "working_directory": readable(os.getcwd),
    }


def config_hash(config: Mapping[str, Any]) -> str:
    """A short stable hash of a (resolved) config: runs with the same settings share it."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def peak_memory(device_type: str, device: Any = None) -> dict[str, Any]:
    """This process's peak resident memory and, on a GPU run, the most memory torch allocated there (MiB)."""

    def rss() -> float:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # bytes on macOS, KiB elsewhere
        return round(peak / 2**20 if sys.platform == "darwin" else peak / 2**10, 1)

    record = {"cpu_peak_rss_mib": readable(rss)}
    if device_type == "cuda":
        import torch

        record["cuda_max_allocated_mib"] = readable(lambda: round(torch.cuda.max_memory_allocated(device) / 2**20, 1))
    return record


# ---------------------------------------------------------------- reading a record back


def _part(record: Any, key: str) -> dict[str, Any]:
    value = record.get(key) if isinstance(record, Mapping) else None
    return value if isinstance(value, Mapping) else {}


def describe_code(code: Mapping[str, Any]) -> str:
    commit = code.get("git_commit")
    if commit is None:
        where = "not a git checkout"
    else:
        dirty = code.get("git_dirty")
        where = f"git {str(commit)[:12]}" + (" with uncommitted changes" if dirty is True else "" if dirty is False else " (changes unknown)")
    return f"recallseg {code.get('recallseg', UNKNOWN)}, {where}"


def describe_versions(found: Mapping[str, Any]) -> str:
    torch_build = ", ".join(f"{name} {found[key]}" for key, name in (("torch_cuda", "CUDA"), ("cudnn", "cuDNN")) if found.get(key) is not None)
    parts = [f"python {found.get('python', UNKNOWN)}", f"torch {found.get('torch', UNKNOWN)}" + (f" ({torch_build})" if torch_build else "")]
    parts += [f"{key} {value}" for key, value in found.items() if key not in ("python", "torch", "torch_cuda", "cudnn")]
    return ", ".join(parts)


def describe_machine(found: Mapping[str, Any]) -> str:
    cpu = f"{found.get('cpu', UNKNOWN)} ({found.get('cpu_cores', UNKNOWN)} cores, {found.get('usable_cores', UNKNOWN)} usable)"
    if "gpu" in found:
        gpu = f"{found.get('gpu')} ({found.get('gpu_memory_gib', UNKNOWN)} GiB, driver {found.get('gpu_driver', UNKNOWN)})"
        where = f"{gpu}; CPU {cpu}"
    else:
        where = cpu
    processes = found.get("processes", UNKNOWN)
    return (
        f"{where}; device {found.get('device', UNKNOWN)}, {processes} process{'' if processes == 1 else 'es'}, "
        f"{found.get('precision', UNKNOWN)}, channels_last {found.get('channels_last', UNKNOWN)}"
    )


def describe_environment(record: Any) -> list[str]:
    """The lines a log or a table shows of a record's environment (``"unknown"`` for what it lacks)."""
    parts = (("code", describe_code), ("versions", describe_versions), ("machine", describe_machine))
    return [f"{key}: {describe(_part(record, key)) if _part(record, key) else UNKNOWN}" for key, describe in parts]


def version_differences(before: Any, now: Any) -> list[str]:
    """``"torch 2.8.0 -> 2.14.1"`` for each version (recallseg's commit included) known in both records
    that differs; what only one of them knows is not compared."""
    pairs = [("recallseg", _part(before, "code").get("recallseg"), _part(now, "code").get("recallseg"))]
    pairs.append(("commit", _part(before, "code").get("git_commit"), _part(now, "code").get("git_commit")))
    old, new = _part(before, "versions"), _part(now, "versions")
    pairs += [(key, old.get(key), new.get(key)) for key in old if key in new]
    known = [(key, a, b) for key, a, b in pairs if a not in (None, UNKNOWN) and b not in (None, UNKNOWN)]
    return [f"{key} {_short(key, a)} -> {_short(key, b)}" for key, a, b in known if a != b]


def _short(key: str, value: Any) -> str:
    return str(value)[:12] if key == "commit" else str(value)
