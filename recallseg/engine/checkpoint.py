"""Checkpoints: atomic writes and safe loads.

A checkpoint is a dict of tensors and plain data (the resolved config is a plain dict), so
it loads with ``torch.load(weights_only=True)``: a file carrying an arbitrary pickle payload
is refused and its code never runs.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from ..atomic_files import atomic_write
from ..errors import UserError

FORMAT = "recallseg-checkpoint"
VERSION = 1


class CheckpointError(UserError, RuntimeError):
    pass


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write ``state`` to ``path`` atomically: a temporary file, fsync, then rename.

    A crash or kill during the save leaves the previous file intact.
    """
    with atomic_write(path, "wb") as handle:
        torch.save({"format": FORMAT, "version": VERSION, **state}, handle)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a recallseg checkpoint safely, with a clear error for anything else."""
    path = Path(path)
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
    return state
