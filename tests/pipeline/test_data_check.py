"""The dataset check (``pipeline.data_check``): its class counts are the class statistics a run
computes, it is skipped with ``dataset.check=false``, and a dataset without files has nothing to read."""

import numpy as np
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from conftest import CONFIG_DIR
from dataset_trees import make_folder
from recallseg.data.folder import FolderDataset
from recallseg.pipeline.builder import build_dataset
from recallseg.pipeline.class_statistics import cached_class_statistics, class_statistics
from recallseg.pipeline.data_check import check_before_training, check_dataset


def dataset_config(*overrides):
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return OmegaConf.to_container(compose("train", overrides=list(overrides)).dataset, resolve=True)


def test_the_check_caches_the_class_statistics_a_run_would_compute(tmp_path):
    make_folder(tmp_path / "data", frames={"train": 3, "val": 1}, size=(30, 44))
    cfg = dataset_config("dataset=folder", f"dataset.root={tmp_path / 'data'}", "dataset.resize=[16,24]", "dataset.size_divisor=8")  # labels resized as loaded
    checked = check_dataset(cfg, tmp_path / "cache")
    assert checked.problems == 0 and [s.frames for s in checked.splits] == [3, 1]
    raw = build_dataset(cfg, "train", transform=None)
    direct = class_statistics(raw, raw.num_classes, raw.ignore_index)
    cached = cached_class_statistics(raw, cfg, "train", tmp_path / "cache")
    assert cached.source.startswith("cache ")  # written by the check: the run reads no label again
    assert cached.pixel_counts.tolist() == direct.pixel_counts.tolist() and cached.image_pixels.tolist() == direct.image_pixels.tolist()
    assert int(direct.pixel_counts.sum()) + int((np.concatenate([raw.load(i)[1].ravel() for i in range(3)]) == 255).sum()) == 3 * 16 * 24


def test_dataset_check_false_reads_nothing_and_a_dataset_without_files_has_nothing_to_check(tmp_path, monkeypatch):
    make_folder(tmp_path / "data", frames={"train": 2, "val": 1})
    monkeypatch.setattr(FolderDataset, "__init__", lambda *a, **k: (_ for _ in ()).throw(AssertionError("the dataset was read")))
    check_before_training(dataset_config("dataset=folder", f"dataset.root={tmp_path / 'data'}", "dataset.check=false"), tmp_path / "cache")
    synthetic = check_dataset(dataset_config("dataset.num_train=4", "dataset.num_val=2"), tmp_path / "cache")
    assert synthetic.problems == 0 and [s.frames for s in synthetic.splits] == [4, 2]
    assert not (tmp_path / "cache").exists()  # nothing read, nothing cached
