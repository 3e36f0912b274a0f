"""model.channel_order=bgr end to end: evaluation and prediction feed the network what training fed it."""

from __future__ import annotations

import csv

import cv2
import numpy as np
import pytest
import torch

from conftest import run_entry_point
from dataset_trees import make_folder
from model_checkpoints import write_checkpoint
from recallseg.checkpoints.format import save_checkpoint

pytestmark = pytest.mark.slow


def reversed_copy(source, target):
    """The same folder dataset with every image's colour channels reversed."""
    for path in source.rglob("*"):
        out = target / path.relative_to(source)
        if path.is_dir():
            out.mkdir(parents=True, exist_ok=True)
        elif path.parent.name in ("train", "val") and path.parent.parent.name == "images":
            out.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(out), cv2.imread(str(path))[:, :, ::-1])
        else:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(path.read_bytes())


def confusion(checkpoint, root, out):
    run_entry_point("evaluate.py", f"checkpoint={checkpoint}", f"dataset.root={root}", "dataset.split=val", f"hydra.run.dir={out}")
    return list(csv.reader((out / "confusion_matrix.csv").open()))


def test_bgr_model_sees_in_evaluation_and_prediction_what_an_rgb_model_sees_on_reversed_images(tmp_path):
    make_folder(tmp_path / "a", frames={"train": 1, "val": 3}, size=(64, 64))
    reversed_copy(tmp_path / "a", tmp_path / "b")
    images = np.stack([cv2.imread(str(p))[:, :, ::-1] for p in sorted((tmp_path / "a" / "images" / "val").glob("*.png"))])
    overrides = ["dataset=folder", f"dataset.root={tmp_path / 'a'}", "model.channel_order=bgr", "dataset.size_divisor=32"]
    bgr = write_checkpoint(tmp_path / "bgr.pt", ["background", "road", "car"], overrides, images=images)
    state = torch.load(bgr, weights_only=True)
    state["config"]["model"]["channel_order"] = "rgb"
    rgb = tmp_path / "rgb.pt"
    save_checkpoint(state, rgb)

    bgr_on_a = confusion(bgr, tmp_path / "a", tmp_path / "e1")
    assert bgr_on_a == confusion(rgb, tmp_path / "b", tmp_path / "e2")
    assert bgr_on_a != confusion(rgb, tmp_path / "a", tmp_path / "e3")  # the order matters to this model

    for checkpoint, root, out in ((bgr, "a", "p1"), (rgb, "b", "p2")):
        run_entry_point("scripts/predict.py", f"checkpoint={checkpoint}", f"input={tmp_path / root / 'images' / 'val'}", f"output={tmp_path / out}", "device=cpu")
    for path in sorted((tmp_path / "p1" / "color").glob("*.png")):
        assert np.array_equal(cv2.imread(str(path)), cv2.imread(str(tmp_path / "p2" / "color" / path.name))), path.name
