"""Which checkpoint a run continues from, and what it may assume about the run directory.

- A fresh run never overwrites a run: checkpoints in the directory refuse it.
- ``resume=<file>`` continues that checkpoint; ``resume=<run directory>`` the newest checkpoint
  of that run that holds training state, chosen as ``resume=auto`` chooses.
- ``resume=auto`` takes the newest checkpoint holding training state (``last.pt`` on a tie).
  ``best.pt`` holds the weights only, so it is never a candidate, and that is not worth a word.
  Checkpoints exist but none can be resumed (truncated, foreign, a refused payload): the run is
  refused and the files stay as they are. ``last.pt`` cannot be read but another checkpoint
  holds training state: the run continues from that one and says so. Nothing but a readable,
  weights-only ``best.pt`` (a run killed between its first ``best.pt`` and its first
  ``last.pt``): a fresh start, said in one line, which keeps ``best.pt`` until a better score
  replaces it (``best_score_held``).
- The best score a resumed run starts with is the one ``best.pt`` holds: after a kill between
  writing ``best.pt`` and ``last.pt`` the two agree again, and a missing or unreadable
  ``best.pt`` resets the score (so the next validation writes a new one), with a warning. A
  checkpoint of another directory continued in a new one starts without a best score, and
  without a warning: that directory has no ``best.pt`` yet.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recallseg.errors import UserError
from recallseg.checkpoints.contents import missing_training_state
from recallseg.checkpoints.format import CheckpointError, load_checkpoint

log = logging.getLogger("recallseg")


class RunRefused(UserError):
    """The run directory cannot be used as asked; nothing in it was changed."""


@dataclass(frozen=True)
class Start:
    """Where a run starts: afresh (``path`` None), or from the checkpoint at ``path`` with its (CPU) ``state``."""

    path: Path | None = None
    state: dict[str, Any] | None = None


def resume_start(checkpoint_dir: Path, resume: str | None) -> Start:
    """What a run writing to ``checkpoint_dir`` starts from, for its ``resume`` setting (None, ``auto``,
    a checkpoint file or a run directory); refuses what it cannot use, with nothing changed."""
    if resume is None:
        refuse_existing_run(checkpoint_dir)
        return Start()
    if resume == "auto":
        return Start(*(newest_resumable(checkpoint_dir) or (None, None)))
    path = Path(resume)
    if path.is_dir():
        folder = path / "checkpoints" if (path / "checkpoints").is_dir() else path
        found = newest_resumable(folder) if any(folder.glob("*.pt")) else None
        if found is None:
            raise RunRefused(f"resume={resume}: {folder} holds no checkpoint a run can continue from; give a run directory with a last.pt, or a checkpoint file")
        return Start(*found)
    # On the CPU: random states must be CPU tensors; the trainer moves the rest to the device.
    return Start(path, load_checkpoint(path, map_location="cpu"))


def refuse_existing_run(checkpoint_dir: Path) -> None:
    """A fresh run never overwrites one: refuse a run directory that already holds checkpoints."""
    existing = sorted(checkpoint_dir.glob("*.pt")) if checkpoint_dir.is_dir() else []
    if existing:
        raise RunRefused(
            f"{checkpoint_dir} already holds checkpoints ({', '.join(p.name for p in existing)}): recallseg never overwrites "
            "a run; continue it with resume=auto, or choose another hydra.run.dir"
        )


def _problem(path: Path, state: dict[str, Any] | None, error: Exception | None) -> str | None:
    if error is not None:
        return " ".join(str(error).replace(str(path), path.name).split())
    if missing_training_state(state):
        return f"{path.name} holds no training state (weights only), so a run cannot continue from it"
    return None


def newest_resumable(checkpoint_dir: Path) -> tuple[Path, dict[str, Any]] | None:
    """``resume=auto``'s checkpoint and its (CPU) state; None for a fresh start (see the module docstring)."""
    files = sorted(checkpoint_dir.glob("*.pt")) if checkpoint_dir.is_dir() else []
    best: tuple[tuple[int, bool], Path, dict[str, Any]] | None = None
    problems: dict[Path, str] = {}
    weights_only: list[Path] = []
    for path in files:
        state, error = None, None
        try:
            state = load_checkpoint(path, map_location="cpu")
        except CheckpointError as caught:
            error = caught
        problem = _problem(path, state, error)
        if problem is not None:
            problems[path] = problem
            if error is None:
                weights_only.append(path)
            continue
        rank = (int(state["iteration"]), path.name == "last.pt")
        if best is None or rank > best[0]:
            best = (rank, path, state)
    if not files:
        log.info("resume=auto: no checkpoint in %s, starting from scratch", checkpoint_dir)
        return None
    if best is None and len(weights_only) == len(files):
        log.info(
            "resume=auto: %s holds no training state (weights only: the run ended before its first last.pt), so the run "
            "starts from scratch; %s stays until a better score replaces it", ", ".join(p.name for p in files), "it" if len(files) == 1 else "they",
        )  # fmt: skip
        return None
    if best is None:
        raise RunRefused(
            f"resume=auto: no checkpoint in {checkpoint_dir} can be resumed ({'; '.join(problems.values())}); nothing was changed: "
            "continue from a good copy with resume=<path>, or start afresh in another hydra.run.dir"
        )
    _, path, state = best
    for bad, problem in problems.items():
        if bad in weights_only:  # best.pt: holds the model only, as it should
            continue
        log.warning("resume=auto: cannot use %s (%s); continuing from %s at iteration %d instead", bad, problem, path.name, int(state["iteration"]))
    return path, state


def reconciled_best_score(checkpoint_dir: Path, state: dict[str, Any], resumed_from: Path) -> float:
    """The best score to continue with: the one ``best.pt`` holds (see the module docstring)."""
    recorded = float(state.get("best_score", -math.inf))
    best_path = checkpoint_dir / "best.pt"
    if resumed_from.resolve() == best_path.resolve():
        return recorded
    if resumed_from.resolve().parent != checkpoint_dir.resolve() and not best_path.is_file():
        return -math.inf  # another run's checkpoint, continued in a new directory: its first validation writes best.pt
    try:
        held = load_checkpoint(best_path, map_location="cpu").get("best_score") if best_path.is_file() else None
        problem = None if best_path.is_file() else "is missing"
    except CheckpointError as error:
        held, problem = None, f"cannot be read ({' '.join(str(error).split())})"
    if problem is not None:
        if math.isfinite(recorded):
            log.warning(
                "%s %s: the best %s recorded in %s (%.4f) is reset, so the next validation writes a new best.pt",
                best_path, problem, state.get("monitor", "score"), resumed_from.name, recorded,
            )  # fmt: skip
        return -math.inf
    held = recorded if held is None else float(held)
    if held != recorded:
        log.warning("best.pt holds best %s %.4f, %s recorded %.4f: continuing with best.pt's", state.get("monitor", "score"), held, resumed_from.name, recorded)
    return held


def best_score_held(checkpoint_dir: Path, monitor: str) -> float:
    """The score of ``best.pt`` for a run that starts afresh over it (``-inf`` when it holds none for ``monitor``)."""
    path = checkpoint_dir / "best.pt"
    try:
        state = load_checkpoint(path, map_location="cpu") if path.is_file() else {}
    except CheckpointError:
        return -math.inf
    score = float(state.get("best_score", -math.inf))
    return score if state.get("monitor", monitor) == monitor and math.isfinite(score) else -math.inf
