"""Class statistics in process, on masks given as arrays (``pipeline.class_statistics``), against hand counts."""

import json
import random
import re

import numpy as np
import pytest
import torch

from recallseg.errors import ConfigError
from recallseg.pipeline.class_statistics import (
    ClassStatistics, cached_class_statistics, class_statistics, read_statistics_file, statistics_config, statistics_key, write_statistics,
)  # fmt: skip

# Two masks over classes 0..3 (class 3 never occurs); 255 is ignored.
MASKS = [
    np.array([[0, 0, 1], [255, 1, 1]], dtype=np.uint8),  # 5 labelled pixels: two 0, three 1
    np.array([[2, 2, 255], [0, 255, 255]], dtype=np.uint8),  # 3 labelled pixels: two 2, one 0
]
COUNTS = [3, 3, 2, 0]
IMAGE_PIXELS = [5 + 3, 5, 3, 0]  # labelled pixels of the images in which each class appears


class Masks:
    """Just what the statistics read of a dataset: samples as (image, mask), a name per sample, the classes."""

    classes = ("a", "b", "c", "d")
    num_classes = 4
    ignore_index = 255

    def __init__(self, masks, draw=False):
        self.masks, self.draw = masks, draw

    def __len__(self):
        return len(self.masks)

    def __getitem__(self, index):
        if self.draw:  # a dataset drawing from the global streams (random augmentation, say)
            random.random(), np.random.rand()
        return None, self.masks[index]

    def describe(self, index):
        return f"mask {index}"


def test_pixel_counts_and_the_labelled_pixels_of_the_images_holding_each_class():
    stats = class_statistics(Masks(MASKS), 4, 255)
    assert stats.pixel_counts.tolist() == COUNTS and stats.image_pixels.tolist() == IMAGE_PIXELS
    assert stats.source == "computed over 2 images"


@pytest.mark.parametrize("bad, shown", [(4, "[4]"), (-1, "[-1]")])
def test_a_label_outside_the_classes_that_is_not_the_ignore_index_is_refused(bad, shown):
    mask = MASKS[0].astype(np.int16)
    mask[0, 2] = bad
    with pytest.raises(ValueError) as info:
        class_statistics(Masks([MASKS[1], mask]), 4, 255)
    assert str(info.value) == f"mask 1: label values {shown} are outside 0..3 and are not the ignore index 255"


def test_computing_statistics_restores_the_python_and_numpy_streams_a_dataset_draws_from():
    random.seed(5)
    np.random.seed(5)
    class_statistics(Masks(MASKS, draw=True), 4, 255)
    after = (random.random(), float(np.random.rand()))
    random.seed(5)
    np.random.seed(5)
    assert after == (random.random(), float(np.random.rand()))


def test_the_written_file_holds_counts_frequencies_and_image_pixels(tmp_path):
    path = tmp_path / "stats.json"
    write_statistics(path, Masks(MASKS), ClassStatistics(torch.tensor(COUNTS), torch.tensor(IMAGE_PIXELS)), "train", {"root": "/d"})
    data = json.loads(path.read_text())
    assert data["pixel_counts"] == COUNTS and data["image_pixels"] == IMAGE_PIXELS
    assert data["frequencies"] == [3 / 8, 3 / 8, 2 / 8, 0.0]
    assert (data["dataset"], data["split"], data["classes"], data["config"]) == ("Masks", "train", ["a", "b", "c", "d"], {"root": "/d"})


def test_the_statistics_identity_keeps_train_split_and_drops_the_other_builder_keys():
    cfg = {"_target_": "x.Y", "root": "/d", "train_split": "train", "split": "val", "train_transform": [], "val_transform": [], "cache": True}
    kept = statistics_config(cfg)
    assert kept["train_split"] == "train" and kept["root"] == "/d" and kept["_target_"] == "x.Y"
    assert not {"split", "train_transform", "val_transform", "cache"} & set(kept)


def test_a_cache_file_for_another_number_of_classes_is_recomputed(tmp_path):
    cfg = {"_target_": "x.Y", "root": "/d"}
    stale = tmp_path / f"class_stats_{statistics_key(cfg, 'train', None)}.json"
    stale.write_text(json.dumps({"pixel_counts": [1, 2, 3], "image_pixels": [1, 2, 3]}))
    stats = cached_class_statistics(Masks(MASKS), cfg, "train", tmp_path)
    assert stats.pixel_counts.tolist() == COUNTS and stats.source.startswith("computed over 2 images")
    assert json.loads(stale.read_text())["pixel_counts"] == COUNTS  # rewritten


def test_a_statistics_file_of_other_classes_or_another_split_is_refused(tmp_path):
    path = tmp_path / "stats.json"
    cfg = {"_target_": "x.Y", "root": "/d"}
    write_statistics(path, Masks(MASKS), ClassStatistics(torch.tensor(COUNTS), torch.tensor(IMAGE_PIXELS)), "train", cfg)
    assert read_statistics_file(path, 4, cfg, "train", ["a", "b", "c", "d"]).image_pixels.tolist() == IMAGE_PIXELS
    with pytest.raises(ConfigError) as info:
        read_statistics_file(path, 4, cfg, "train", ["a", "b", "c", "e"])
    assert str(info.value) == (
        f"dataset.stats_file: {path} was computed for the classes ['a', 'b', 'c', 'd'], this run has ['a', 'b', 'c', 'e']; "
        "rewrite it with recallseg-class-stats for this dataset, or set dataset.stats_file=null"
    )
    with pytest.raises(ConfigError, match=re.escape(f"dataset.stats_file: {path} was computed for another dataset config: split 'train' (file) vs 'val' (this run);")):
        read_statistics_file(path, 4, cfg, "val")
