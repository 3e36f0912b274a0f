"""Hydra entry points shared by ``train.py``/``evaluate.py`` and the console commands."""

from __future__ import annotations

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

# The configs live in the repository's configs/ folder; an installed package carries them
# as recallseg.configs (see pyproject.toml).
_SOURCE_CONFIGS = Path(__file__).resolve().parent.parent / "configs"
CONFIG_PATH = str(_SOURCE_CONFIGS) if (_SOURCE_CONFIGS / "train.yaml").is_file() else "pkg://recallseg.configs"


def run_training(cfg: DictConfig) -> float:
    from .engine.trainer import train

    metrics = train(cfg)
    # The monitored value, for Hydra sweepers; NaN when the run stopped before validating.
    return metrics.get(str(cfg.trainer.get("monitor", "mIoU")).removeprefix("val/"), float("nan"))


def run_evaluation(cfg: DictConfig) -> float:
    from .engine.checkpoint_evaluation import evaluate_checkpoint

    metrics = evaluate_checkpoint(cfg, HydraConfig.get().overrides.task)
    return metrics["mIoU"]


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="train")
def train_main(cfg: DictConfig) -> float:
    """Console command ``recallseg-train``."""
    return run_training(cfg)


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="eval")
def eval_main(cfg: DictConfig) -> float:
    """Console command ``recallseg-eval``."""
    return run_evaluation(cfg)
