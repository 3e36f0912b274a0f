"""The checkpoint side of a training run: what a checkpoint holds, what a run continues from, and
how a save refuses non-finite weights.

``Trainer`` inherits this policy; it needs the trainer's parts (``model``, ``optimizer``,
``scheduler``, ``scaler``, ``criterion``, ``runtime``, ``cfg``), its place (``iteration``,
``best_score``), the start its caller chose (``_start``, None: choose it here) and the run's
record (``run_record``, None until ``fit`` starts). Which file a resume takes, the config it
resumes with and what may change on resume are decided in ``recallseg.checkpoints``
(``resume``, ``resume_config``, ``resume_changes``); the files' format in ``checkpoints.format``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from recallseg.atomic_files import remove_orphaned_temporaries
from recallseg.checkpoints.contents import for_inference, require_training_state
from recallseg.checkpoints.format import first_nonfinite, require_finite_weights, save_checkpoint
from recallseg.checkpoints.resume import best_score_held, reconciled_best_score, resume_start
from recallseg.checkpoints.resume_changes import apply_optimizer_options, check_resumable
from recallseg.losses.registry import load_training_state
from recallseg.runtime.random_state import rng_state
from recallseg.training.run_directory import check_writable, claim_run_directory, release_run_directory
from recallseg.errors import NonFiniteError

log = logging.getLogger("recallseg")


class CheckpointPolicy:
    """``state_dict``/``load_state_dict`` of a run, ``choose_start`` (fresh or resumed) and ``_save``."""

    def state_dict(self, rng_per_rank: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
        """Everything a resume needs; ``rng_per_rank`` (from ``gather_rng_states``) is every rank's random state."""
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "loss": self.criterion.state_dict(),
            "iteration": self.iteration,
            "best_score": self.best_score,
            "monitor": self.monitor,
            "classes": self.classes,
            "palette": [list(map(int, colour)) for colour in self.train_set.palette] if self.train_set.palette else None,
            "config": OmegaConf.to_container(self.cfg, resolve=True),
            "rng": rng_per_rank[0] if rng_per_rank else rng_state(),
            **({"run": self.run_record} if self.run_record is not None else {}),
            **extra,
        }
        if rng_per_rank is not None and len(rng_per_rank) > 1:
            state["rng_per_rank"] = rng_per_rank
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Everything but the random states, which ``fit`` restores once the data stream exists."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        for group in self.optimizer.param_groups:  # a checkpoint of the other mode stores lr as float/tensor
            lr = group["lr"]
            if self.cuda_graph and not isinstance(lr, torch.Tensor):
                group["lr"] = torch.tensor(float(lr), device=self.runtime.device)
            elif not self.cuda_graph and isinstance(lr, torch.Tensor):
                group["lr"] = float(lr)
        self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        for key in load_training_state(self.criterion, state["loss"]):
            values = [round(float(v), 4) for v in self.criterion.get_buffer(key).flatten().tolist()]
            log.warning("resume: the loss's %s differ from the checkpoint's (its options or the training split changed); the run trains with this run's: %s", key, values)
        self.iteration = int(state["iteration"])
        self.best_score = float(state["best_score"])

    def choose_start(self) -> dict[str, Any] | None:
        """Claim the run directory (rank 0), choose what the run continues from (refusing, with nothing
        changed, what it cannot use), restore it, and check the run directory can be written. Called
        before anything is written."""
        if not self._start_chosen:
            claimed = self.runtime.is_main and claim_run_directory(self.output_dir)
            try:
                self._resumed_state = self._resume_state()
            except BaseException:
                if claimed:  # a refused run leaves the directory as it was
                    release_run_directory(self.output_dir)
                raise
            self._start_chosen = True
            if self.runtime.is_main:
                check_writable(self.checkpoint_dir)
                remove_orphaned_temporaries(self.output_dir, self.checkpoint_dir)
        return self._resumed_state

    def _resume_state(self) -> dict[str, Any] | None:
        """The checkpoint to continue from, or None for a fresh run (which must not clobber one)."""
        start = self._start or resume_start(self.checkpoint_dir, self.cfg.resume)
        if start.path is None:
            if self.cfg.resume == "auto":  # none at all, or only a weights-only best.pt (killed before its first last.pt)
                self.best_score = best_score_held(self.checkpoint_dir, self.monitor)
            return None
        path, state = start.path, start.state
        require_finite_weights(state, path)
        require_training_state(state, path)  # best.pt holds the model only
        new = OmegaConf.to_container(self.cfg, resolve=True)
        changes = check_resumable(path, state.get("config", {}), new, state.get("classes", self.classes), self.classes)
        self.load_state_dict(state)
        self.best_score = reconciled_best_score(self.checkpoint_dir, state, path)
        changed = {key.split(".", 1)[1] for key in changes if key.startswith("optimizer.")}
        apply_optimizer_options(self.optimizer, self.scheduler, {k: v for k, v in new["optimizer"].items() if k in changed})
        if path.resolve() == (self.checkpoint_dir / "last.pt").resolve():
            self._saved_at = self.iteration
        log.info("resumed from %s at iteration %d", path, self.iteration)
        return state

    def _save(self, name: str, rng_per_rank: list[dict[str, Any]] | None = None, **extra: Any) -> Path:
        """Write a checkpoint; refuses weights or statistics that are not finite (a NaN never reaches disk)."""
        key = first_nonfinite(self.model.state_dict())
        if key is not None:
            raise NonFiniteError(
                f"model tensor {key!r} is not finite at iteration {self.iteration}; not saving {name}. "
                "Lower optimizer.lr, set trainer.grad_clip, or check the data."
            )
        path = self.checkpoint_dir / name
        state = self.state_dict(rng_per_rank, **extra)
        save_checkpoint(for_inference(state) if name == "best.pt" else state, path)  # best.pt: no optimizer state
        if name == "last.pt":
            self._saved_at = self.iteration
        return path
