"""Random states in checkpoints: every rank's own, so a resumed run repeats an uninterrupted one.

States are tensors and plain data, so a checkpoint holding them still loads with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import logging
import random
from typing import Any

import numpy as np
import torch

log = logging.getLogger("recallseg")


def rng_state() -> dict[str, Any]:
    """All random states as tensors and plain data (loadable with weights_only=True)."""
    state = {
        "python": random.getstate(),
        "numpy": [np.random.get_state()[0], np.random.get_state()[1].tolist(), *np.random.get_state()[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def gather_rng_states(state: dict[str, Any], distributed: bool, world_size: int) -> list[dict[str, Any]]:
    """Every rank's ``state`` (one ``rng_state()`` per rank), in rank order. A collective: every rank must call it."""
    if not distributed:
        return [state]
    states: list[Any] = [None] * world_size
    torch.distributed.all_gather_object(states, state)
    return states


def rng_state_for_rank(checkpoint: dict[str, Any], rank: int, world_size: int) -> tuple[dict[str, Any], bool]:
    """The random state this rank resumes with, and whether it is this rank's own: it is when the
    checkpoint has one per rank for this many ranks (or a single process resumes one); otherwise
    it is rank 0's (``rng``), which cannot reproduce other ranks' dropout."""
    per_rank = checkpoint.get("rng_per_rank")
    if per_rank is not None and len(per_rank) == world_size:
        return per_rank[rank], True
    if world_size > 1:
        log.warning(
            "the checkpoint holds random states for %s rank(s), this run has %d: rank 0 resumes its own and the other "
            "ranks are reseeded, so dropout will not repeat an uninterrupted run", len(per_rank) if per_rank else 1, world_size,
        )
    return checkpoint["rng"], rank == 0


def set_rng_state(state: dict[str, Any]) -> None:
    version, values, *rest = state["python"]
    random.setstate((version, tuple(values), *rest))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def rank_seed(seed: int, rank: int, iteration: int = 0) -> int:
    """The seed of one rank's own stream (dropout masks) from the run's seed.

    Ranks must not share it (identical dropout on every rank), and rank r of seed s must not
    collide with rank 0 of a nearby seed: ranks are spaced by a prime larger than any seed sweep.
    ``iteration`` gives a resumed rank without a stored state of its own a fresh stream."""
    return seed + 7919 * rank + iteration
