"""Hydra entry points shared by ``train.py``/``evaluate.py`` and the console commands."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

# The configs live in the repository's configs/ folder; an installed package carries them
# as recallseg.configs (see pyproject.toml).
_SOURCE_CONFIGS = Path(__file__).resolve().parent.parent / "configs"
CONFIG_PATH = str(_SOURCE_CONFIGS) if (_SOURCE_CONFIGS / "train.yaml").is_file() else "pkg://recallseg.configs"


class UserError(SystemExit):
    """A problem the user can fix (bad file, bad value): the message alone, exit status 2."""


def _report_user_errors(function, cfg: DictConfig):
    from .data.io import DatasetError
    from .engine.checkpoint import CheckpointError

    try:
        return function(cfg)
    except (CheckpointError, DatasetError, FileExistsError, FileNotFoundError, FloatingPointError) as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        raise UserError(2) from None


def run_training(cfg: DictConfig) -> float:
    from .engine.trainer import train

    metrics = _report_user_errors(train, cfg)
    # The monitored value, for Hydra sweepers; NaN when the run stopped before validating.
    return metrics.get(str(cfg.trainer.get("monitor", "mIoU")).removeprefix("val/"), float("nan"))


def run_evaluation(cfg: DictConfig) -> float:
    from .engine.checkpoint_evaluation import evaluate_checkpoint

    metrics = _report_user_errors(lambda c: evaluate_checkpoint(c, HydraConfig.get().overrides.task), cfg)
    return metrics["mIoU"]


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="train")
def train_main(cfg: DictConfig) -> float:
    """Console command ``recallseg-train``."""
    return run_training(cfg)


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="eval")
def eval_main(cfg: DictConfig) -> float:
    """Console command ``recallseg-eval``."""
    return run_evaluation(cfg)
