"""The caches and statistics files know a label file by what user space cannot put back: a rewrite
whose size and modification time are restored (cp -p, rsync -a, an archive) is a new file."""

import os
import shutil

import cv2
import pytest

from dataset_trees import make_folder
from recallseg.errors import ConfigError
from recallseg.pipeline import CachedDataset
from recallseg.pipeline.builder import build_dataset
from recallseg.pipeline.class_statistics import cached_class_statistics, read_statistics_file, write_statistics

CFG = {"_target_": "recallseg.data.folder.FolderDataset", "train_split": "train"}


STORED = [cv2.IMWRITE_PNG_COMPRESSION, 0]  # uncompressed: the file's length depends on the size only


def relabel_in_place(path, written_mask):
    """Rewrite a mask with other classes but the same byte length and the old modification time."""
    before = os.stat(path)
    mask = written_mask.copy()
    mask[written_mask == 1], mask[written_mask == 2] = 2, 1
    cv2.imwrite(str(path), mask, STORED)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    return mask


@pytest.fixture
def folder(tmp_path):
    written = make_folder(tmp_path / "folder", frames={"train": 2, "val": 1})
    for stem, mask in written["train"]:
        cv2.imwrite(str(tmp_path / "folder" / "masks" / "train" / f"{stem}.png"), mask, STORED)
    cfg = {**CFG, "root": str(tmp_path / "folder")}
    return cfg, build_dataset(cfg, "train", transform=None), written


def test_statistics_and_frames_of_a_file_rewritten_with_its_size_and_mtime_are_not_reused(tmp_path, folder):
    cfg, dataset, written = folder
    first = cached_class_statistics(dataset, cfg, "train", tmp_path / "stats")
    frames = CachedDataset(dataset, tmp_path / "frames")
    frames.fill(progress=False)
    mask = relabel_in_place(dataset.samples[0].label, written["train"][0][1])
    again = build_dataset(cfg, "train", transform=None)
    second = cached_class_statistics(again, cfg, "train", tmp_path / "stats")
    assert "computed" in second.source and second.pixel_counts.tolist() != first.pixel_counts.tolist()
    assert (CachedDataset(again, tmp_path / "frames").load(0)[1] == mask).all()


def test_a_statistics_file_of_other_label_files_is_refused_and_a_copy_accepted(tmp_path, folder):
    cfg, dataset, written = folder
    stats = cached_class_statistics(dataset, cfg, "train", tmp_path / "stats")
    path = tmp_path / "stats.json"
    write_statistics(path, dataset, stats, "train", cfg)
    copy = tmp_path / "copy"
    shutil.copytree(cfg["root"], copy)  # other inodes and times, the same content
    copied = {**cfg, "root": str(copy)}
    read_statistics_file(path, 3, dataset=build_dataset(copied, "train", transform=None))
    relabel_in_place(dataset.samples[1].label, written["train"][1][1])
    with pytest.raises(ConfigError, match=r"^dataset.stats_file: .* was computed from other label files than this split's \(the content"):
        read_statistics_file(path, 3, cfg, "train", dataset=build_dataset(cfg, "train", transform=None))
