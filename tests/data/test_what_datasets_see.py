"""Datasets see what the user put there, or say why not: linked directories are followed, every
entry passed over is named in one warning line, an empty split is refused, and labels that hold
one value only or images whose EXIF orientation is not applied are warned about once."""

import logging
import os

import numpy as np
import pytest
from PIL import Image

from dataset_trees import SYNTHIA_SEQUENCE, make_cityscapes, make_folder, make_synthia_seqs, random_image, synthia_label, write_array, write_rgb
from recallseg.data import Cityscapes, DatasetError, FolderDataset, Synthia
from recallseg.pipeline import build_dataset


def skipped_lines(caplog):
    return [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]


def broken_links(directory, name_suffix):
    """A dangling link and a link looping back to its own directory, inside ``directory``."""
    os.symlink(directory / f"gone{name_suffix}", directory / f"dangling{name_suffix}")
    os.symlink(directory, directory / "loop")


def test_a_linked_city_is_part_of_the_split_and_broken_links_are_named_in_one_line(tmp_path, caplog):
    root, elsewhere = tmp_path / "cityscapes", tmp_path / "elsewhere"
    make_cityscapes(root, {"train": 2, "val": 1})
    moved = make_cityscapes(elsewhere, {"train": 1, "val": 1}, seed=3)["train"]
    for top in ("leftImg8bit", "gtFine"):  # the city aachen of another tree, linked in as ulm
        os.symlink(elsewhere / top / "train" / "aachen", root / top / "train" / "ulm")
    broken_links(root / "leftImg8bit" / "train" / "aachen", "_leftImg8bit.png")
    with caplog.at_level(logging.WARNING, logger="recallseg"):
        dataset = Cityscapes(root, "train")
        Cityscapes(root, "train")  # listed again in the same run (as for the class statistics): said once
    images = [sample.image for sample in dataset.samples]
    assert root / "leftImg8bit" / "train" / "ulm" / moved[0][0].name in images and len(images) == 3
    assert skipped_lines(caplog) == [
        f"Cityscapes train: skipped 2 entries under {root}: leftImg8bit/train/aachen/dangling_leftImg8bit.png (dangling link), "
        "leftImg8bit/train/aachen/loop (link loop: a directory already walked)"
    ]


def test_folder_and_synthia_name_what_they_skip(tmp_path, caplog):
    make_folder(tmp_path / "folder")
    broken_links(tmp_path / "folder" / "images" / "train", ".png")
    (tmp_path / "folder" / "masks" / "train" / "notes.txt").write_text("not a mask")
    make_synthia_seqs(tmp_path / "synthia", frames=3, sides=["Stereo_Left"], cameras=["Omni_F"])
    os.symlink(tmp_path / "nowhere.png", tmp_path / "synthia" / SYNTHIA_SEQUENCE / "RGB" / "Stereo_Left" / "Omni_F" / "000009.png")
    with caplog.at_level(logging.WARNING, logger="recallseg"):
        assert len(FolderDataset(tmp_path / "folder", "train")) == 3
        assert len(Synthia(tmp_path / "synthia", "all", sides=["Left"], cameras=["F"])) == 3
    folder, synthia = skipped_lines(caplog)
    assert folder.startswith("FolderDataset train: skipped 3 entries") and "images/train/dangling.png (dangling link)" in folder
    assert "images/train/loop (link loop" in folder and "masks/train/notes.txt (not a mask" in folder
    assert synthia.startswith("Synthia all: skipped 1 entry") and "Omni_F/000009.png (dangling link)" in synthia


def test_predict_follows_linked_folders_and_names_broken_links(tmp_path, caplog):
    from recallseg.commands.predict import find_images

    photos, more = tmp_path / "photos", tmp_path / "more"
    for folder in (photos, more):
        folder.mkdir()
        write_rgb(folder / "a.png", random_image(np.random.default_rng(0), 8, 8))
    os.symlink(more, photos / "linked")
    broken_links(photos, ".jpg")
    with caplog.at_level(logging.WARNING, logger="recallseg"):
        found = find_images(photos)
    assert [name for _, name in found] == ["a", "linked/a"]
    assert skipped_lines(caplog) == [f"input {photos}: skipped 2 entries under {photos}: dangling.jpg (dangling link), loop (link loop: a directory already walked)"]


@pytest.mark.parametrize("fractions, frames", [([1.0, 0.0, 0.0], 4), ([0.7, 0.1, 0.2], 4)])
def test_an_empty_synthia_split_is_refused_in_one_line(tmp_path, fractions, frames):
    make_synthia_seqs(tmp_path, frames=frames, sides=["Stereo_Left"], cameras=["Omni_F"])
    with pytest.raises(DatasetError) as info:
        Synthia(tmp_path, "val", sides=["Left"], cameras=["F"], split_fractions=fractions)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"Synthia: the val split under {tmp_path} is empty: split_fractions")
    assert f"none of the {frames} frames" in message


def test_an_empty_training_split_is_a_dataset_error_not_a_traceback():
    cfg = {"_target_": "recallseg.data.SyntheticStreets", "height": 32, "width": 32, "num_train": 0, "num_val": 1}
    with pytest.raises(DatasetError, match=r"^SyntheticStreets: the train split is empty"):
        build_dataset(cfg, "train")


def test_evaluate_refuses_an_empty_split(tmp_path):
    from model_checkpoints import TINY_RUNTIME, composed_config, eval_config
    from recallseg.checkpoints.format import save_checkpoint
    from recallseg.data.synthia import SEQS_CLASSES
    from recallseg.evaluation.score_checkpoint import evaluate_checkpoint

    make_synthia_seqs(tmp_path / "synthia", frames=4, sides=["Stereo_Left"], cameras=["Omni_F"])
    overrides = ["dataset=synthia", f"dataset.root={tmp_path / 'synthia'}", "dataset.sides=[Left]", "dataset.cameras=[F]"]
    checkpoint = tmp_path / "synthia.pt"  # the split is refused before the model is read: no weights needed
    save_checkpoint({"model": {}, "config": composed_config([*TINY_RUNTIME, *overrides]), "classes": list(SEQS_CLASSES)}, checkpoint)
    with pytest.raises(DatasetError, match="the val split .* is empty"):
        evaluate_checkpoint(eval_config(checkpoint, tmp_path), ["dataset.split=val", "dataset.split_fractions=[1.0,0.0,0.0]"])
    assert not (tmp_path / "eval" / "metrics.json").exists()


def test_a_synthia_label_with_an_empty_class_channel_is_warned_once(tmp_path, caplog):
    make_synthia_seqs(tmp_path, frames=3, sides=["Stereo_Left"], cameras=["Omni_F"])
    rng = np.random.default_rng(1)
    for path in (tmp_path / SYNTHIA_SEQUENCE / "GT" / "LABELS" / "Stereo_Left" / "Omni_F").iterdir():
        label = synthia_label(rng, rng.integers(0, 16, (24, 40)).astype(np.uint16))
        label[:, :, 0], label[:, :, 2] = label[:, :, 2], 0  # the class saved in B, R left empty
        write_array(path, label)
    dataset = Synthia(tmp_path, "all", sides=["Left"], cameras=["F"], void_as_class=False)
    with caplog.at_level(logging.WARNING, logger="recallseg"):
        for index in range(len(dataset)):
            dataset.load(index)
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "Synthia all: every pixel of" in warnings[0] and "is ignored (255)" in warnings[0]
    assert "R channel" in warnings[0]


def test_a_mask_of_one_class_is_warned_once(tmp_path, caplog):
    make_folder(tmp_path, frames={"train": 2})
    for path in (tmp_path / "masks" / "train").iterdir():
        write_array(path, np.full((32, 48), 2, np.uint8))
    dataset = FolderDataset(tmp_path, "train")
    with caplog.at_level(logging.WARNING, logger="recallseg"):
        dataset.load(0)
        dataset.load(1)
    assert [r.getMessage().split(": ", 1)[1].split(";")[0] for r in caplog.records] == [
        f"every pixel of {tmp_path / 'masks' / 'train' / 'train_000.png'} is class 2 (car)"
    ]


def test_images_and_masks_are_read_as_stored_whatever_the_exif_orientation(tmp_path, caplog):
    make_folder(tmp_path, frames={"train": 1})
    image = random_image(np.random.default_rng(2), 32, 48)
    exif = Image.new("RGB", (1, 1)).getexif()
    exif[0x0112] = 6  # "rotate 90 degrees to display"
    (tmp_path / "images" / "train" / "train_000.png").unlink()
    Image.fromarray(image).save(tmp_path / "images" / "train" / "train_000.jpg", exif=exif.tobytes(), quality=100)
    dataset = FolderDataset(tmp_path, "train")
    with caplog.at_level(logging.WARNING, logger="recallseg"):
        loaded, mask = dataset.load(0)
    assert loaded.shape == (32, 48, 3) and mask.shape == (32, 48)
    assert np.abs(loaded.astype(int) - image).mean() < 8  # the stored pixels, not a rotated view
    assert len(caplog.records) == 1 and "carries EXIF orientation 6 (rotated 90 degrees)" in caplog.records[0].getMessage()


def test_a_training_split_of_one_class_or_of_none_is_warned(caplog):
    import torch

    from recallseg.pipeline.class_statistics import ClassStatistics, warn_uniform_split

    with caplog.at_level(logging.WARNING, logger="recallseg"):
        warn_uniform_split(ClassStatistics(torch.tensor([0, 5, 0]), None, "computed over 2 images"), ["a", "b", "c"], "train")
        warn_uniform_split(ClassStatistics(torch.tensor([0, 0, 0]), None, "computed over 2 images"), ["a", "b", "c"], "train")
        warn_uniform_split(ClassStatistics(torch.tensor([1, 5, 0]), None, "computed over 2 images"), ["a", "b", "c"], "train")
    assert [r.getMessage().split(":")[0] for r in caplog.records] == ["every labelled pixel of the train split is class 1 ('b')", "the train split has no labelled pixel"]
