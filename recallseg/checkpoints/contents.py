"""What each checkpoint of a run holds.

- ``last.pt``: everything a resume needs (weights, optimizer, scheduler, scaler, loss state,
  random states, iteration, best score, config, classes, palette) and the run's record.
- ``best.pt``: what evaluation, prediction and export need: the weights, the config, the
  classes and palette, the score that made it the best (with its iteration) and the run's
  record (code, versions, machine, data). No optimizer, scaler or random states, so it is
  about a third of ``last.pt`` for AdamW.

Both load with ``torch.load(weights_only=True)`` (``checkpoints.format``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from recallseg.checkpoints.format import CheckpointError

# The keys of a resume's state that the best model keeps.
INFERENCE_KEYS = ("model", "config", "classes", "palette", "iteration", "best_score", "monitor", "run")


def for_inference(state: dict[str, Any]) -> dict[str, Any]:
    """The part of a training ``state`` that ``best.pt`` holds."""
    return {key: state[key] for key in INFERENCE_KEYS if key in state}


# What a run needs to continue from a checkpoint (``last.pt`` has it, ``best.pt`` does not).
TRAINING_KEYS = ("optimizer", "scheduler", "iteration")


def missing_training_state(state: dict[str, Any]) -> list[str]:
    """The training entries ``state`` lacks (empty: a run can continue from it)."""
    return [key for key in TRAINING_KEYS if key not in state]


def require_training_state(state: dict[str, Any], path: str | Path) -> None:
    """Refuse to resume from a checkpoint without optimizer state (``best.pt``, an exported model)."""
    missing = missing_training_state(state)
    if missing:
        path = Path(path)
        raise CheckpointError(
            f"resume={path}: it holds the model only (no {', '.join(missing)} state), so a run cannot continue from it; "
            f"resume from {path.with_name('last.pt')} (or resume=auto), or start a new run from these weights"
        )
