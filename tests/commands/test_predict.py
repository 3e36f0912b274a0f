"""recallseg-predict (scripts/predict.py): colour masks and overlays for arbitrary images, clear errors for bad input."""

import cv2
import numpy as np
import pytest

from conftest import run_entry_point
from model_checkpoints import write_checkpoint
from recallseg.data.synthetic import CLASSES, PALETTE, SyntheticStreets
from recallseg.commands import predict


# What the checkpoint's training run recorded (a part of it), for run.json to pass on.
TRAINING_RUN = {"kind": "train", "versions": {"torch": "2.8.0"}, "data": {"splits": {"val": {"images": 2, "label_fingerprint": "0123456789abcdef"}}}}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    images = np.stack([SyntheticStreets("val", 64, 96, num_val=2)[i][0] for i in range(2)])
    overrides = ["dataset.height=64", "dataset.width=96"]
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.pt", CLASSES, overrides, images=images, run=TRAINING_RUN)


@pytest.fixture
def photos(tmp_path):
    """Images of odd sizes and several formats, one in a subfolder, plus files that are not images."""
    folder = tmp_path / "photos"
    (folder / "more").mkdir(parents=True)
    rng = np.random.default_rng(0)
    cv2.imwrite(str(folder / "street.jpg"), rng.integers(0, 255, (50, 77, 3), dtype=np.uint8))
    cv2.imwrite(str(folder / "grey.png"), rng.integers(0, 255, (33, 41), dtype=np.uint8))
    cv2.imwrite(str(folder / "more" / "deep.png"), rng.integers(0, 65535, (40, 70, 3), dtype=np.uint16))
    cv2.imwrite(str(folder / "wide.bmp"), rng.integers(0, 255, (20, 130, 3), dtype=np.uint8))
    (folder / "notes.txt").write_text("not an image")
    return folder


@pytest.mark.slow
def test_colour_masks_and_overlays_for_any_size_and_format(checkpoint, photos, tmp_path):
    out = tmp_path / "out"
    result = run_entry_point("scripts/predict.py", f"checkpoint={checkpoint}", f"input={photos}", f"output={out}", "device=cpu", "inference.flip=true")
    sizes = {"street": (50, 77), "grey": (33, 41), "more/deep": (40, 70), "wide": (20, 130)}
    palette = {tuple(c) for c in PALETTE}
    for name, (height, width) in sizes.items():
        colour = cv2.imread(str(out / "color" / f"{name}.png"))[:, :, ::-1]
        overlay = cv2.imread(str(out / "overlay" / f"{name}.png"))
        assert colour.shape == overlay.shape == (height, width, 3), name
        assert {tuple(c) for c in np.unique(colour.reshape(-1, 3), axis=0)} <= palette
    assert "notes.txt" in result.stderr and "skipped" in result.stderr  # unreadable files are named, not fatal
    assert "4 image(s)" in result.stdout


def test_a_folder_without_readable_images_is_a_clear_error(checkpoint, tmp_path, capsys):
    folder = tmp_path / "junk"
    folder.mkdir()
    (folder / "a.txt").write_text("text")
    (folder / "b.png").write_bytes(b"\x89PNG broken")
    assert predict.main([f"checkpoint={checkpoint}", f"input={folder}", f"output={tmp_path / 'out'}", "device=cpu"]) == 2
    error = capsys.readouterr().err
    assert "no readable image in" in error and str(folder) in error and "b.png" in error
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").rglob("*.png"))


def test_an_empty_folder_and_a_missing_input_are_clear_errors(checkpoint, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert predict.main([f"checkpoint={checkpoint}", f"input={tmp_path / 'empty'}", f"output={tmp_path / 'out'}"]) == 2
    assert "no readable image" in capsys.readouterr().err
    assert predict.main([f"checkpoint={checkpoint}", f"input={tmp_path / 'nowhere'}", f"output={tmp_path / 'out'}"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_bad_checkpoints_and_arguments_are_clear_errors(tmp_path, photos, capsys):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00" * 10)
    assert predict.main([f"checkpoint={tmp_path / 'none.pt'}", f"input={photos}", f"output={tmp_path}"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert predict.main([f"checkpoint={garbage}", f"input={photos}", f"output={tmp_path}"]) == 2
    assert str(garbage) in capsys.readouterr().err
    assert predict.main([f"input={photos}"]) == 2
    assert "missing checkpoint=..., output=..." in capsys.readouterr().err


def test_inputs_sharing_a_stem_get_distinct_predictions(checkpoint, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.jpg"), np.zeros((24, 40, 3), np.uint8))
    cv2.imwrite(str(folder / "a.png"), np.full((30, 50, 3), 255, np.uint8))
    cv2.imwrite(str(folder / "b.png"), np.zeros((20, 20, 3), np.uint8))
    out = tmp_path / "out"
    assert predict.main([f"checkpoint={checkpoint}", f"input={folder}", f"output={out}", "device=cpu", "formats=[index]"]) == 0
    assert sorted(p.name for p in (out / "index").iterdir()) == ["a.jpg.png", "a.png.png", "b.png"]
    assert cv2.imread(str(out / "index" / "a.jpg.png")).shape[:2] == (24, 40)
    assert cv2.imread(str(out / "index" / "a.png.png")).shape[:2] == (30, 50)


def test_a_prediction_records_its_run_and_the_checkpoints_training_run(checkpoint, tmp_path):
    import json

    import torch

    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((24, 40, 3), np.uint8))
    out = tmp_path / "out"
    assert predict.main([f"checkpoint={checkpoint}", f"input={tmp_path / 'a.png'}", f"output={out}", "device=cpu", "formats=[index]"]) == 0
    written = json.loads((out / "run.json").read_text())
    assert written["training_run"] == TRAINING_RUN
    run = written["run"]
    assert run["kind"] == "predict" and run["versions"]["torch"] == torch.__version__ and run["machine"]["device"] == "cpu"
    assert run["checkpoint"] == str(checkpoint) and run["end"]["images"] == 1 and run["end"]["cpu_peak_rss_mib"] > 0


def test_unique_output_names():
    from recallseg.evaluation.predictions import unique_output_names

    assert unique_output_names(["x/a.jpg", "x/a.PNG", "a.png", "b.tif"]) == ["x/a.jpg", "x/a.PNG", "a", "b"]
    assert unique_output_names(["A.jpg", "a.png"]) == ["A.jpg", "a.png"]  # case-insensitive file systems
    with pytest.raises(ValueError, match="same prediction file"):
        unique_output_names(["a.jpg", "a.png", "a.jpg.png"])
