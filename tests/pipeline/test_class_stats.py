"""scripts/class_stats.py counts the pixels of each class over the training split."""

import numpy as np
import pytest

from conftest import read_json, run_entry_point
from dataset_trees import make_folder


def class_stats_of_a_folder(tmp_path):
    """scripts/class_stats.py run on a 3-image folder dataset: (the written frames, the JSON, its path)."""
    written = make_folder(tmp_path / "folder", frames={"train": 3, "val": 2})
    output = tmp_path / "stats.json"
    run_entry_point(
        "scripts/class_stats.py", "dataset=folder", f"dataset.root={tmp_path / 'folder'}", f"output={output}",
        "num_workers=0", f"hydra.run.dir={tmp_path / 'run'}",
    )  # fmt: skip
    return written, read_json(output), output


@pytest.mark.slow
def test_class_stats_counts_the_training_split(tmp_path):
    written, stats, _ = class_stats_of_a_folder(tmp_path)
    masks = np.stack([mask for _, mask in written["train"]])
    expected = [int((masks == c).sum()) for c in range(3)]
    assert stats["dataset"] == "FolderDataset" and stats["classes"] == ["background", "road", "car"]
    assert stats["pixel_counts"] == expected
    assert abs(sum(stats["frequencies"]) - 1.0) < 1e-9


@pytest.mark.slow
def test_class_stats_records_image_pixels_and_the_config_and_a_run_refuses_another_config(tmp_path):
    from omegaconf import OmegaConf

    from recallseg.training.build import training_class_statistics
    from recallseg.errors import ConfigError

    written, stats, output = class_stats_of_a_folder(tmp_path)
    masks = [mask for _, mask in written["train"]]
    labelled = [int((m != 255).sum()) for m in masks]
    expected = [sum(n for m, n in zip(masks, labelled) if (m == c).any()) for c in range(3)]
    assert stats["image_pixels"] == expected and stats["config"]["root"] == str(tmp_path / "folder")
    assert "train_transform" not in stats["config"] and "cache" not in stats["config"]

    from conftest import CONFIG_DIR
    from hydra import compose, initialize_config_dir

    def run_cfg(*overrides):
        with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
            cfg = compose("train", overrides=["output_dir=/tmp/unused", "dataset=folder", f"dataset.root={tmp_path / 'folder'}", *overrides])
        return cfg

    used = training_class_statistics(run_cfg(f"dataset.stats_file={output}"), 3)()
    assert used.pixel_counts.tolist() == stats["pixel_counts"] and used.image_pixels.tolist() == expected
    assert f"dataset.stats_file {output}" == used.source
    other = run_cfg(f"dataset.stats_file={output}", "dataset.ignore_index=254")
    with pytest.raises(ConfigError, match=r"dataset.stats_file: .*computed for another dataset config: ignore_index 255 \(file\) vs 254"):
        training_class_statistics(other, 3)()
    OmegaConf.to_container(other)  # the refusal left the config intact


def test_statistics_cache_is_keyed_by_the_label_files(tmp_path):
    import os

    from recallseg.pipeline.builder import build_dataset
    from recallseg.pipeline.class_statistics import cached_class_statistics

    written = make_folder(tmp_path / "folder", frames={"train": 2, "val": 1})
    cfg = {"_target_": "recallseg.data.folder.FolderDataset", "root": str(tmp_path / "folder"), "train_split": "train"}
    dataset = build_dataset(cfg, "train", transform=None)
    first = cached_class_statistics(dataset, cfg, "train", tmp_path / "cache")
    assert "computed" in first.source and len(list((tmp_path / "cache").glob("*.json"))) == 1
    assert "cache" in cached_class_statistics(dataset, cfg, "train", tmp_path / "cache").source  # same files: the cache
    # relabel one file (same config): the cached counts must not be reused
    label = dataset.samples[0].label
    mask = written["train"][0][1].copy()
    mask[mask == 1] = 2
    import cv2

    cv2.imwrite(str(label), mask)
    os.utime(label, ns=(label.stat().st_atime_ns, label.stat().st_mtime_ns + 10**9))
    relabelled = cached_class_statistics(build_dataset(cfg, "train", transform=None), cfg, "train", tmp_path / "cache")
    assert "computed" in relabelled.source and relabelled.pixel_counts[1] < first.pixel_counts[1]
    assert len(list((tmp_path / "cache").glob("*.json"))) == 2


def test_computing_statistics_leaves_every_random_stream_as_it_was(tmp_path):
    """A run that computes the statistics and one that reads them from the cache draw the same numbers."""
    import random

    import numpy as np
    import torch

    from recallseg.pipeline.builder import build_dataset
    from recallseg.pipeline.class_statistics import cached_class_statistics

    make_folder(tmp_path / "folder", frames={"train": 2, "val": 1})
    cfg = {"_target_": "recallseg.data.folder.FolderDataset", "root": str(tmp_path / "folder"), "train_split": "train"}

    def draws(compute_into):
        random.seed(3)
        np.random.seed(3)
        torch.manual_seed(3)
        stats = cached_class_statistics(build_dataset(cfg, "train", transform=None), cfg, "train", compute_into, num_workers=1)
        return stats, (random.random(), float(np.random.rand()), float(torch.rand(())))

    computed, after_computing = draws(tmp_path / "cache")
    cached, after_cache = draws(tmp_path / "cache")
    assert "computed" in computed.source and "cache" in cached.source and torch.equal(computed.pixel_counts, cached.pixel_counts)
    assert after_computing == after_cache
    random.seed(3)
    np.random.seed(3)
    torch.manual_seed(3)
    assert after_cache == (random.random(), float(np.random.rand()), float(torch.rand(())))
