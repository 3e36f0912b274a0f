"""Checkpoints for evaluation tests without training: a fresh model saved with a composed config.

``write_checkpoint`` composes the real train config (with the given overrides), builds the
model it names and saves it the way the trainer does (``recallseg.checkpoints.format``).
The untrained model is calibrated (``calibrate``) so that it predicts a mix of classes,
which makes metric comparisons meaningful.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from conftest import CONFIG_DIR, TINY_OVERRIDES
from recallseg.checkpoints.format import save_checkpoint
from recallseg.models import build_model

# TINY_OVERRIDES without the synthetic dataset's keys (for dataset=cityscapes, ...).
TINY_RUNTIME = [item for item in TINY_OVERRIDES if not item.startswith("dataset.")]


def composed_config(overrides: Sequence[str]) -> dict:
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["output_dir=/tmp/unused-run", *overrides])
    return OmegaConf.to_container(cfg, resolve=True)


def calibrate(model: torch.nn.Module, x: torch.Tensor) -> None:
    """Make an untrained model predict a mix of classes on inputs like ``x`` (normalised [N,3,H,W]).

    BatchNorm takes the statistics of ``x``; the 1x1 head is shifted and scaled so that every
    class's logit has mean 0 and standard deviation 1 over ``x``.
    """
    with torch.no_grad():
        model.train()
        model(x)
        model.eval()
        conv = model.segmentation_head[0]
        logits = model(x)
        conv.bias -= logits.mean((0, 2, 3))
        spread = model(x).std((0, 2, 3)).clamp_min(1e-6)
        conv.weight /= spread.view(-1, 1, 1, 1)
        conv.bias /= spread


def write_checkpoint(
    path: Path, classes: Sequence[str], overrides: Sequence[str] = (), images: np.ndarray | None = None, seed: int = 0, run: dict | None = None
) -> Path:
    """Save an untrained, calibrated recallseg checkpoint for ``classes`` at ``path``.

    ``images``: uint8 ``[N, H, W, 3]`` RGB frames like the evaluation data (random noise if None);
    ``run``: the record of the training run it stands for (none if None).
    """
    config = composed_config([*TINY_RUNTIME, *overrides])
    torch.manual_seed(seed)
    model = build_model(config["model"], len(classes))
    if images is None:
        x = torch.randn(2, 3, 64, 64)
    else:
        mean = torch.tensor(config["model"]["mean"]).view(1, 3, 1, 1) * 255
        std = torch.tensor(config["model"]["std"]).view(1, 3, 1, 1) * 255
        x = (torch.from_numpy(np.asarray(images)).permute(0, 3, 1, 2).float() - mean) / std
    calibrate(model, x)
    state = {"model": model.state_dict(), "config": config, "classes": list(classes), "iteration": 7}
    save_checkpoint({**state, "run": run} if run is not None else state, path)
    return path


def eval_config(checkpoint, tmp_path):
    """eval.yaml composed for ``checkpoint``, writing into ``tmp_path/eval``."""
    from hydra import compose, initialize_config_dir

    from conftest import CONFIG_DIR

    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return compose("eval", overrides=[f"checkpoint={checkpoint}", f"output_dir={tmp_path / 'eval'}"])
