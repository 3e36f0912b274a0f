"""The training crop of a folder dataset fits its images (``dataset.crop``, ``pipeline.builder.training_crop``):
by default the images' own size, so that a training sample is not mostly padding."""

import logging

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from conftest import CONFIG_DIR
from dataset_trees import random_image, write_array, write_rgb
from recallseg.config.schema import validate_train_config
from recallseg.errors import ConfigError
from recallseg.pipeline.builder import build_dataset

HEIGHT, WIDTH = 240, 320  # a 320x240 camera


@pytest.fixture
def small_images(tmp_path):
    """Two training and one validation 320x240 frames whose masks ignore their top 12 rows."""
    rng = np.random.default_rng(0)
    (tmp_path / "classes.yaml").write_text("classes: [background, road, car]\n")
    for split, count in (("train", 2), ("val", 1)):
        for i in range(count):
            write_rgb(tmp_path / "images" / split / f"{i}.png", random_image(rng, HEIGHT, WIDTH))
            mask = rng.integers(0, 3, (HEIGHT, WIDTH)).astype(np.uint8)
            mask[:12] = 255
            write_array(tmp_path / "masks" / split / f"{i}.png", mask)
    return tmp_path


def training_set(root, *overrides):
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["dataset=folder", f"dataset.root={root}", *overrides])
    return build_dataset(cfg.dataset, "train", train=True)


def ignored(dataset, draws=32):
    """The mean fraction of ignored (padded or ignored-labelled) pixels over ``draws`` training samples."""
    return float(np.mean([(dataset[(i % len(dataset), 1000 + i)][1] == 255).mean() for i in range(draws)]))


def test_the_default_training_crop_of_small_images_is_mostly_image(small_images, caplog):
    own = 12 / HEIGHT  # what the masks themselves ignore
    with caplog.at_level(logging.INFO, logger="recallseg"):
        dataset = training_set(small_images)
    assert dataset[(0, 0)][1].shape == (224, 320)  # 240 rounded down to a multiple of dataset.size_divisor=32
    assert "training crop 224x320 (HxW)" in caplog.text and "0.png" in caplog.text
    # A 512x512 crop of these frames is 71% padding at scale 1 and 54% over the default scales.
    assert ignored(dataset) - own < 0.15
    at_scale_one = training_set(small_images, "dataset.train_transform.0.scale=[1.0,1.0]")
    assert ignored(at_scale_one, draws=8) <= own + 1e-9  # no padding at all: at most what the masks ignore


def test_one_key_sets_the_crop_and_a_size_the_model_cannot_take_is_named(small_images):
    assert training_set(small_images, "dataset.crop=[128,160]")[(0, 0)][1].shape == (128, 160)
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["dataset=folder", "dataset.crop=[128]", "output_dir=unused"])
    with pytest.raises(ConfigError, match=r"^dataset\.crop: got 1 values \[128\]; it must be a list of 2 positive ints"):
        validate_train_config(cfg)
    with pytest.raises(ConfigError, match=r"^dataset\.crop: \[120, 160\] is not divisible by 32 .*e\.g\. \[128, 160\]$"):
        training_set(small_images, "dataset.crop=[120,160]")


def test_a_transform_given_its_own_size_keeps_it(small_images):
    dataset = training_set(small_images, "+dataset.train_transform.0.height=64", "+dataset.train_transform.0.width=96")
    assert dataset[(0, 0)][1].shape == (64, 96)
