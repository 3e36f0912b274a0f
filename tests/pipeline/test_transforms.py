"""Transform pipelines from config: output-stride checks, mask padding, seeded augmentation."""

import albumentations as A
import numpy as np
import pytest

from recallseg.pipeline.builder import build_dataset
from recallseg.pipeline.transforms import RandomScaleCrop, build_transform, check_output_size, pad_to_multiple
from recallseg.errors import ConfigError

CROP = {"_target_": "recallseg.pipeline.transforms.RandomScaleCrop", "height": 64, "width": 96, "scale": [0.75, 2.0], "fill_mask": 255}


def sample(height=50, width=70):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8), rng.integers(0, 5, (height, width)).astype(np.int64)


def test_a_crop_not_divisible_by_the_output_stride_is_rejected_with_the_fix():
    spec = [{"_target_": "albumentations.RandomCrop", "height": 769, "width": 769, "pad_if_needed": True, "fill_mask": 255}]
    with pytest.raises(ValueError, match="769x769.*divisible by 32.*768 or 800"):
        build_transform(spec, size_divisor=32, ignore_index=255, where="dataset.train_transform")
    with pytest.raises(ValueError, match="dataset.train_transform: Resize"):
        build_transform([{"_target_": "albumentations.Resize", "height": 384, "width": 700}], size_divisor=32, where="dataset.train_transform")


def test_a_valid_fixed_size_is_kept_as_is():
    pipeline = build_transform([CROP], size_divisor=32, ignore_index=255)
    assert [type(t).__name__ for t in pipeline.transforms] == ["RandomScaleCrop"]
    assert check_output_size(pipeline.transforms, 32) == "fixed"


def test_a_frame_dependent_size_is_padded_with_the_ignore_index():
    pipeline = build_transform([{"_target_": "albumentations.HorizontalFlip", "p": 1.0}], size_divisor=32, ignore_index=200)
    image, mask = sample(50, 70)
    out = pipeline(image=image, mask=mask)
    assert out["image"].shape == (64, 96, 3) and out["mask"].shape == (64, 96)
    assert (out["mask"][50:] == 200).all() and (out["mask"][:, 70:] == 200).all()
    assert (out["image"][50:] == 0).all()
    assert np.array_equal(out["mask"][:50, :70], mask[:, ::-1])


def test_no_pipeline_with_a_size_divisor_only_pads():
    pipeline = build_transform(None, size_divisor=32, ignore_index=255)
    image, mask = sample(64, 96)
    out = pipeline(image=image, mask=mask)
    assert np.array_equal(out["image"], image) and np.array_equal(out["mask"], mask)
    assert build_transform(None) is None and build_transform([]) is None


def test_padding_the_mask_with_a_class_id_is_rejected():
    spec = [{"_target_": "albumentations.PadIfNeeded", "min_height": 64, "min_width": 64}]  # fill_mask defaults to 0
    with pytest.raises(ValueError, match="pads the mask with 0.*fill_mask: 255"):
        build_transform(spec, ignore_index=255)


def test_random_scale_crop_output_and_padding():
    image, mask = sample(50, 70)
    for scale in ([0.3, 0.3], [1.0, 1.0], [2.0, 3.0]):
        out = RandomScaleCrop(64, 96, scale=scale, fill_mask=255)(image=image, mask=mask)
        assert out["image"].shape == (64, 96, 3) and out["mask"].shape == (64, 96)
        assert set(np.unique(out["mask"])) <= {0, 1, 2, 3, 4, 255}
    small = RandomScaleCrop(64, 96, scale=[0.5, 0.5], fill_mask=255)(image=image, mask=mask)["mask"]
    assert (small == 255).mean() > 0.5  # a 25x35 frame in a 64x96 window: mostly padding


def test_random_scale_crop_at_scale_one_is_an_exact_crop():
    image, _ = sample(50, 70)
    ids = np.arange(50 * 70).reshape(50, 70)
    out = RandomScaleCrop(32, 32, scale=[1.0, 1.0])(image=image, mask=ids)
    y, x = np.argwhere(ids == out["mask"][0, 0])[0]
    assert np.array_equal(out["mask"], ids[y : y + 32, x : x + 32])
    assert np.array_equal(out["image"], image[y : y + 32, x : x + 32])


def test_seeded_augmentation_is_reproducible():
    pipeline = build_transform([CROP, {"_target_": "albumentations.HorizontalFlip", "p": 0.5}, {"_target_": "albumentations.ColorJitter", "p": 1.0}])
    image, mask = sample()
    results = []
    for seed in (5, 5, 6):
        pipeline.set_random_seed(seed)
        results.append(pipeline(image=image, mask=mask))
    assert np.array_equal(results[0]["image"], results[1]["image"]) and np.array_equal(results[0]["mask"], results[1]["mask"])
    assert not np.array_equal(results[0]["image"], results[2]["image"])


def test_images_stay_uint8():
    out = build_transform([CROP, {"_target_": "albumentations.ColorJitter", "p": 1.0}])(image=sample()[0], mask=sample()[1])
    assert out["image"].dtype == np.uint8


def test_builder_rejects_a_dataset_resize_off_the_output_stride():
    cfg = {"_target_": "recallseg.data.SyntheticStreets", "height": 64, "width": 64, "num_train": 2, "size_divisor": 32, "resize": [380, 760]}
    with pytest.raises(ConfigError, match="^dataset.resize: \\[380, 760\\] is not divisible by 32.*\\[384, 768\\]"):
        build_dataset(cfg, "train")


def test_builder_pads_val_frames_to_the_output_stride():
    cfg = {"_target_": "recallseg.data.SyntheticStreets", "height": 40, "width": 72, "num_val": 2, "size_divisor": 32, "val_transform": None}
    image, mask = build_dataset(cfg, "val")[0]
    assert image.shape == (64, 96, 3) and (mask[40:] == 255).all()
    raw_image, _ = build_dataset(cfg, "val", transform=None)[0]
    assert raw_image.shape == (40, 72, 3)


def test_pad_to_multiple_is_a_no_op_on_valid_sizes():
    image, mask = sample(64, 32)
    out = pad_to_multiple(32, 255)(image=image, mask=mask)
    assert out["image"].shape == image.shape
    assert isinstance(pad_to_multiple(), A.PadIfNeeded)


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    from dataset_trees import make_cityscapes, make_folder, make_synthia_rand, make_synthia_seqs

    root = tmp_path_factory.mktemp("trees")
    make_cityscapes(root / "cityscapes", frames={"train": 2, "val": 1}, size=(40, 72))
    make_synthia_seqs(root / "synthia", frames=2, size=(40, 72))
    make_synthia_rand(root / "synthia_rand_cityscapes", frames=10, size=(40, 72))
    make_folder(root / "folder", size=(40, 72))
    return root


@pytest.mark.parametrize("name", ["cityscapes", "synthia", "synthia_cityscapes", "folder"])
def test_shipped_dataset_configs_build_and_meet_the_output_stride(trees, name, monkeypatch):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from conftest import CONFIG_DIR

    monkeypatch.setenv("RECALLSEG_DATA", str(trees))
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"dataset={name}"])
    dataset_cfg = OmegaConf.to_container(cfg.dataset, resolve=True)
    assert dataset_cfg["root"] == str(trees / {"synthia_cityscapes": "synthia_rand_cityscapes"}.get(name, name))
    for split, train in ((dataset_cfg["train_split"], True), (dataset_cfg["val_split"], False)):
        dataset = build_dataset(dataset_cfg, split, train=train)
        image, mask = dataset[(0, 1)]
        assert image.dtype == np.uint8 and mask.dtype == np.uint8
        assert image.shape[0] % 32 == 0 and image.shape[1] % 32 == 0 and mask.shape == image.shape[:2]
        assert dataset.ignore_index == 255 and len(dataset.classes) >= 3


# The paper experiments' protocol, row by row: tests/config/test_paper_protocol.py.
