"""``recallseg-check-data`` and the check a training run starts with (``dataset.check``): every
split's files read at once, every problem reported together, before any training step."""

import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from conftest import CONFIG_DIR, TINY_OVERRIDES
from dataset_trees import make_folder, random_image, write_array, write_rgb
from recallseg.commands import check_data
from recallseg.commands.train import run_training
from recallseg.training.trainer import Trainer

SMALL_MODEL = ["model.arch=Unet", "model.encoder_name=mobilenet_v2", "~model.encoder_output_stride", "+model.encoder_depth=3", "+model.decoder_channels=[16,8,8]"]


@pytest.fixture
def faulty(tmp_path):
    """A folder dataset with one fault of each kind; ``(overrides, {fault: the file or split it names})``."""
    root = tmp_path / "data"
    make_folder(root, frames={"train": 6, "test": 1})
    train_images, train_masks = root / "images" / "train", root / "masks" / "train"
    (train_images / "train_000.png").write_bytes(b"not an image")  # unreadable image
    mask = np.zeros((32, 48), np.uint8)
    mask[3, 4] = 7  # classes 0..2 and 255 only
    write_array(train_masks / "train_001.png", mask)
    write_array(train_masks / "train_002.png", np.zeros((30, 48), np.uint8))  # the image is 48x32
    (train_masks / "train_003.png").write_bytes((train_masks / "train_003.png").read_bytes()[:60])  # truncated mask
    (root / "images" / "val").mkdir()
    (root / "masks" / "val").mkdir()  # an empty validation split
    write_rgb(root / "images" / "test" / "lonely.png", random_image(np.random.default_rng(1), 32, 48))  # an image without a mask
    faults = {
        "unreadable image": str(train_images / "train_000.png"),
        "unknown label value": f"{train_masks / 'train_001.png'} holds mask values (classes 0..2, ignore 255) outside the known ones: 7",
        "size mismatch": f"{train_masks / 'train_002.png'} is 48x30",
        "unreadable mask": str(train_masks / "train_003.png"),
        "empty split": "no images for split 'val'",
        "image without mask": str(root / "images" / "test" / "lonely.png"),
    }
    return [f"dataset.root={root}", "dataset.split=test", f"paths.cache_dir={tmp_path / 'cache'}"], faults


def run_command(monkeypatch, capsys, *args):
    monkeypatch.setattr(sys, "argv", ["recallseg-check-data", "dataset=folder", "num_workers=0", *args])
    with pytest.raises(SystemExit) as ended:
        check_data.main()
        raise SystemExit(0)
    out, err = capsys.readouterr()
    return ended.value.code, out, err


def test_one_check_reports_every_problem_of_every_split_and_exits_2(faulty, monkeypatch, capsys):
    overrides, faults = faulty
    code, out, err = run_command(monkeypatch, capsys, *overrides)
    assert code == 2
    for fault, named in faults.items():
        assert named in err, fault
    lines = [line for line in err.splitlines() if line.strip() and "checking " not in line]
    assert len([line for line in lines if "problem: " in line]) == len(faults)
    assert lines[-1].startswith("error: dataset check: 6 problem(s) in 3 split(s) of FolderDataset at ")
    assert lines[-1].endswith("or set dataset.check=false to train without the check")


def test_a_clean_dataset_is_one_paragraph_with_absent_classes_and_is_not_read_twice(tmp_path, monkeypatch, capsys):
    root = tmp_path / "data"
    make_folder(root, frames={"train": 3, "val": 2})
    mask = np.zeros((32, 48), np.uint8)
    for name in ("val_000.png", "val_001.png"):
        write_array(root / "masks" / "val" / name, mask)  # the validation split holds class 0 only
    args = (f"dataset.root={root}", f"paths.cache_dir={tmp_path / 'cache'}")
    code, out, err = run_command(monkeypatch, capsys, *args)
    assert code == 0, err
    assert out.count("\n") == 1 and "train (dataset.train_split=train) 3 frames, val (dataset.val_split=val) 2 frames" in out
    assert "no problem; warnings: val: 2 class(es) never appear: road (1), car (2); their IoU and recall are not measured" in out
    assert len(list((tmp_path / "cache").glob("class_stats_*.json"))) == 1  # the training split's statistics, for the run

    from recallseg.data.folder import FolderDataset

    monkeypatch.setattr(FolderDataset, "read_raw_label", lambda *a: pytest.fail("a label read again"))
    code, out, err = run_command(monkeypatch, capsys, *args)
    assert code == 0 and out.count("(unchanged since checked)") == 2, err


def test_training_stops_on_the_check_before_its_first_step(faulty, monkeypatch, capsys, caplog):
    overrides, faults = faulty
    run_dir = faulty[0][0].split("=", 1)[1] + "-run"
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[
            *[o for o in TINY_OVERRIDES if not o.startswith("dataset.")], "dataset=folder", *overrides, "loss=ce", *SMALL_MODEL,
            f"output_dir={run_dir}",
        ])  # fmt: skip
    monkeypatch.setattr(Trainer, "fit", lambda self: pytest.fail("training started"))
    with pytest.raises(SystemExit) as ended:
        run_training(cfg)
    assert ended.value.code == 2
    err = capsys.readouterr().err
    for fault, named in faults.items():
        assert named in caplog.text, fault  # the run's log lists every problem
    assert [line for line in err.splitlines() if line.strip()][-1].startswith("error: dataset check: 6 problem(s) in 3 split(s)")
    assert not (Path(run_dir) / "checkpoints").exists()
