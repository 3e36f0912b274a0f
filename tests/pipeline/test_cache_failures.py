"""Caches are a speed-up: one that cannot be written is a warning and the work goes on uncached.
Too little space for the frame cache is one line in sizes a person reads (never "0.0 GiB").
recallseg-class-stats refuses an output file inside the dataset it counts."""

import logging
import shutil
import types

import numpy as np
import pytest

from dataset_trees import make_folder
from recallseg.errors import ConfigError
from recallseg.pipeline.builder import build_dataset
from recallseg.pipeline.cache import CachedDataset


def folder_config(root, cache_dir, **extra):
    return {"_target_": "recallseg.data.folder.FolderDataset", "root": str(root), "cache": True, "cache_dir": str(cache_dir), **extra}


def test_too_little_space_for_the_frame_cache_is_one_line_in_readable_sizes(tmp_path, monkeypatch):
    make_folder(tmp_path / "f", frames={"train": 2}, size=(64, 64))
    monkeypatch.setattr(shutil, "disk_usage", lambda _: types.SimpleNamespace(total=10**9, used=10**9, free=1500))
    with pytest.raises(ConfigError) as caught:
        build_dataset(folder_config(tmp_path / "f", tmp_path / "cache"), "train", transform=None)
    message = str(caught.value)
    assert message == (
        f"dataset.cache_dir: the frame cache of 2 frames needs 32.8 KB but {tmp_path / 'cache'} has 1.5 KB free; "
        "set dataset.cache_dir= to a larger disk, or dataset.cache=false"
    )  # 2 x 64 x 64 x (3 + 1) bytes and 2 flags


def test_a_frame_cache_that_cannot_be_written_is_a_warning_and_frames_are_decoded(tmp_path, caplog):
    make_folder(tmp_path / "f", frames={"train": 2})
    (tmp_path / "a_file").write_text("not a folder")
    with caplog.at_level(logging.WARNING, "recallseg"):
        dataset = build_dataset(folder_config(tmp_path / "f", tmp_path / "a_file" / "cache"), "train", transform=None)
    assert not isinstance(dataset, CachedDataset)
    plain = build_dataset({**folder_config(tmp_path / "f", tmp_path), "cache": False}, "train", transform=None)
    assert all(np.array_equal(dataset[i][0], plain[i][0]) for i in range(2))
    (record,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert f"frame cache cannot be written in dataset.cache_dir={tmp_path / 'a_file' / 'cache'}" in record.getMessage()


def test_a_finished_frame_cache_on_a_read_only_disk_is_found_at_the_start(tmp_path, monkeypatch, caplog):
    make_folder(tmp_path / "f", frames={"train": 1})
    cfg = folder_config(tmp_path / "f", tmp_path / "cache")
    build_dataset(cfg, "train", transform=None).fill(progress=False)
    real_open = open

    def read_only_open(file, mode="r", *args, **kwargs):
        if "+" in mode or "w" in mode:
            raise OSError(30, "Read-only file system", str(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr("builtins.open", read_only_open)
    with caplog.at_level(logging.WARNING, "recallseg"):
        dataset = build_dataset(cfg, "train", transform=None)
    assert not isinstance(dataset, CachedDataset) and "Read-only file system" in caplog.text


def test_a_statistics_cache_that_cannot_be_written_is_a_warning(tmp_path, caplog):
    from recallseg.pipeline.class_statistics import cached_class_statistics

    make_folder(tmp_path / "f", frames={"train": 2})
    (tmp_path / "a_file").write_text("not a folder")
    cfg = {"_target_": "recallseg.data.folder.FolderDataset", "root": str(tmp_path / "f"), "train_split": "train"}
    dataset = build_dataset(cfg, "train", transform=None)
    with caplog.at_level(logging.WARNING, "recallseg"):
        stats = cached_class_statistics(dataset, cfg, "train", tmp_path / "a_file" / "cache")
    assert int(stats.pixel_counts.sum()) > 0 and "computed" in stats.source
    assert "cannot write the class-statistics cache" in caplog.text and "the statistics are used uncached" in caplog.text
    assert f"{tmp_path / 'a_file'} is a file, not a folder" in caplog.text


def test_class_stats_refuses_an_output_inside_the_dataset(tmp_path, monkeypatch):
    from omegaconf import OmegaConf

    from recallseg.commands.class_stats import class_stats

    make_folder(tmp_path / "f", frames={"train": 1})
    classes_file = tmp_path / "f" / "classes.yaml"
    before = classes_file.read_bytes()
    monkeypatch.setattr("recallseg.commands.class_stats.build_dataset", lambda *a, **k: pytest.fail("read the dataset first"))
    cfg = OmegaConf.create({"dataset": {**folder_config(tmp_path / "f", tmp_path), "cache": False}, "split": "train", "output": str(classes_file), "num_workers": 0})
    with pytest.raises(ConfigError, match=rf"^output: {classes_file} is inside dataset.root {tmp_path / 'f'}, which this command reads"):
        class_stats(cfg)
    assert classes_file.read_bytes() == before
