"""Checkpoints: atomic writes and safe loads.

A checkpoint is a dict of tensors and plain data (the resolved config is a plain dict), so
it loads with ``torch.load(weights_only=True)``: a file carrying an arbitrary pickle payload
is refused and its code never runs. Its plain data is checked as it is read (``stored_data``):
an interpolation or a Hydra call key in it is refused before anything resolves it.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from recallseg.atomic_files import atomic_write
from recallseg.errors import UserError
from recallseg.checkpoints.stored_data import DATA_KEYS, StoredDataError, escape_interpolations, read_stored_data

FORMAT = "recallseg-checkpoint"
VERSION = 1


class CheckpointError(UserError, RuntimeError):
    pass


class CheckpointSpaceError(CheckpointError):
    """A checkpoint could not be written for lack of disk space; the previous file is intact."""


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write ``state`` to ``path`` atomically: a temporary file, fsync, then rename.

    A crash or kill during the save leaves the previous file intact. A save that fails for
    lack of space says so (``CheckpointSpaceError``: the file, about how many bytes it needs and
    how many are free) instead of PyTorch's serializer error.
    """
    try:
        with atomic_write(path, "wb") as handle:
            stored = {key: escape_interpolations(value) if key in DATA_KEYS else value for key, value in state.items()}
            torch.save({"format": FORMAT, "version": VERSION, **stored}, handle)
    except (OSError, RuntimeError) as error:
        space = out_of_space(error, Path(path), state)
        if space is None:
            raise
        raise space from None


def payload_bytes(value: Any) -> int:
    """About the bytes ``torch.save`` writes for ``value``: its tensors' storage plus a little per object."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(payload_bytes(v) + 64 for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(payload_bytes(v) + 16 for v in value)
    return 64


def out_of_space(error: BaseException, path: Path, state: dict[str, Any]) -> CheckpointSpaceError | None:
    """The message for a save that failed for space, or None when ``error`` is something else.

    ENOSPC (and EDQUOT, a full quota) name themselves; PyTorch's serializer turns a failed write
    into a RuntimeError (``inline_container.cc``), judged by the free space left."""
    import errno
    import shutil

    needed = payload_bytes(state)
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        free = None
    named = isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)
    if not named and not (isinstance(error, RuntimeError) and free is not None and free < needed):
        return None
    kept = f"the previous {path.name} is unchanged" if path.exists() else f"no {path.name} was written"
    return CheckpointSpaceError(
        f"cannot save checkpoint {path}: not enough disk space (needs about {needed / 1e6:.1f} MB, "
        f"{'an unknown amount' if free is None else f'{free / 1e6:.1f} MB'} free; {kept}); free space on that disk "
        "or choose another hydra.run.dir, then continue with resume=auto"
    )


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a recallseg checkpoint safely, with a clear error for anything else."""
    path = Path(path)
    if path.is_dir():
        inside = sorted(p.relative_to(path).as_posix() for p in [*path.glob("*.pt"), *path.glob("checkpoints/*.pt")])
        raise CheckpointError(
            f"checkpoint {path} is a folder, not a checkpoint file; give the file"
            + (f", e.g. {path / inside[0]} (it holds {', '.join(inside[:4])})" if inside else ", e.g. <run dir>/checkpoints/best.pt")
        )
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist (expected e.g. <run dir>/checkpoints/best.pt)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        if "weights only" not in str(error).lower():  # not a rejected object: the bytes are not a checkpoint
            raise CheckpointError(f"cannot read checkpoint {path}: it is corrupt or not a PyTorch file ({str(error).splitlines()[0]})") from None
        raise CheckpointError(
            f"refusing to load {path}: it holds Python objects beyond tensors and plain data, "
            f"which could run arbitrary code ({str(error).splitlines()[0]}). Only load checkpoints written by recallseg."
        ) from None
    except Exception as error:
        raise CheckpointError(f"cannot read checkpoint {path}: it is corrupt, truncated or not a PyTorch file ({type(error).__name__}: {error})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a recallseg checkpoint (no '{FORMAT}' marker); was it written by another program?")
    try:
        return read_stored_data(state, path)
    except StoredDataError as error:
        raise CheckpointError(str(error)) from None


def first_nonfinite(tensors: dict[str, Any]) -> str | None:
    """The name of the first floating-point tensor of ``tensors`` holding a NaN or infinity, or None."""
    for name, tensor in tensors.items():
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            return name
    return None


def require_finite_weights(state: dict[str, Any], path: str | Path) -> None:
    """Refuse a checkpoint whose model weights or buffers are not all finite: scoring, predicting with
    or training on from it would give a silently wrong result."""
    name = first_nonfinite(state.get("model") or {})
    if name is not None:
        raise CheckpointError(
            f"{path}: model tensor {name!r} holds NaN or infinite values, so this checkpoint cannot be used; "
            "take an earlier checkpoint of the run (recallseg never writes one like this itself)"
        )
