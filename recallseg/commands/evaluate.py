"""``python evaluate.py checkpoint=... [key=value ...]`` / ``recallseg-eval``.

Evaluation's own keys (``EVAL_KEYS``) compose ``eval.yaml``; every other key overrides the
checkpoint's stored config and is handed to the task as an argument."""

from __future__ import annotations

import sys
from typing import Sequence

import hydra
from omegaconf import DictConfig

from recallseg.commands.user_errors import user_errors
from recallseg.config.compose import CONFIG_PATH, compose_checked, runs_a_job

# Sections that belong to an evaluation itself; other keys override the checkpoint's stored config.
EVAL_KEYS = ("checkpoint", "output_dir", "evaluation", "inference", "predictions", "hydra")


def split_eval_arguments(argv: list[str]) -> tuple[list[str], list[str]]:
    """``(evaluation's own arguments, overrides of the checkpoint's stored config)``."""
    own, stored = [], []
    for arg in argv:
        top = arg.split("=", 1)[0].lstrip("+~").split(".")[0].split("/")[0]
        (own if arg.startswith("-") or top in EVAL_KEYS else stored).append(arg)
    return own, stored


def given(argv: Sequence[str], key: str) -> str | None:
    """The value the command line gives ``key`` (the last one), or None."""
    values = [arg.split("=", 1)[1] for arg in argv if "=" in arg and arg.split("=", 1)[0].lstrip("+") == key]
    return values[-1] if values else None


def run_evaluation(cfg: DictConfig, stored_overrides: Sequence[str] = ()) -> float:
    """The evaluation task: score ``cfg.checkpoint``; returns its mIoU (for Hydra sweepers)."""
    from recallseg.evaluation.score_checkpoint import evaluate_checkpoint

    with user_errors():
        metrics = evaluate_checkpoint(cfg, stored_overrides)
    return metrics["mIoU"]


def eval_main() -> None:
    """``python evaluate.py checkpoint=... [key=value ...]`` and ``recallseg-eval ...``."""
    from omegaconf import OmegaConf

    from recallseg.checkpoints.stored_config import checkpoint_config
    from recallseg.config.schema import validate_eval_config
    from recallseg.evaluation.score_checkpoint import check_evaluation_outputs

    own, stored = split_eval_arguments(sys.argv[1:])
    if runs_a_job(own):
        with user_errors():
            eval_cfg = compose_checked("eval", own)
            validate_eval_config(eval_cfg)
            _, stored_cfg, _ = checkpoint_config(eval_cfg.checkpoint, stored)
            # Before Hydra makes the run directory: a refused location is left as it was.
            predictions = {"predictions": OmegaConf.to_container(eval_cfg.predictions, resolve=True)}
            check_evaluation_outputs(predictions, stored_cfg["dataset"], given(own, "output_dir") or given(own, "hydra.run.dir"))

    @hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="eval")
    def evaluation_app(cfg: DictConfig) -> float:
        return run_evaluation(cfg, stored)

    sys.argv = [sys.argv[0], *own]
    evaluation_app()


if __name__ == "__main__":
    eval_main()
