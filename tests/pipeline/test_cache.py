"""The decoded-frame cache returns exactly what the dataset decodes, and is reused."""

import pickle

import numpy as np
import pytest

from dataset_trees import make_cityscapes, make_folder, make_synthia_seqs
from recallseg.pipeline.builder import build_dataset
from recallseg.pipeline.cache import CachedDataset
from recallseg.data.cityscapes import Cityscapes
from recallseg.data.folder import FolderDataset
from recallseg.data.synthetic import SyntheticStreets
from recallseg.data.synthia import Synthia


def assert_same_frames(cached, plain):
    assert len(cached) == len(plain)
    for index in range(len(plain)):
        (image, mask), (ref_image, ref_mask) = cached[index], plain[index]
        assert image.dtype == ref_image.dtype and mask.dtype == ref_mask.dtype == cached.mask_dtype() == np.uint8
        assert np.array_equal(image, ref_image) and np.array_equal(mask, ref_mask)


def test_cached_frames_equal_decoded_frames_before_and_after_filling(tmp_path):
    make_cityscapes(tmp_path / "cs", frames={"train": 3})
    plain = Cityscapes(tmp_path / "cs", "train")
    cached = CachedDataset(Cityscapes(tmp_path / "cs", "train"), tmp_path / "cache")
    assert not any(cached.cache.is_filled(i) for i in range(3))
    assert_same_frames(cached, plain)  # first pass: decoded and written
    assert all(cached.cache.is_filled(i) for i in range(3))
    assert_same_frames(cached, plain)  # second pass: read from the memory map
    assert cached.classes == plain.classes and cached.ignore_index == 255 and cached.has_labels


def test_a_second_dataset_reads_the_same_cache_without_decoding(tmp_path, monkeypatch):
    make_synthia_seqs(tmp_path / "sy", frames=2, sides=["Stereo_Left"], cameras=["Omni_F", "Omni_B"])
    options = {"sides": ["Left"], "cameras": ["F", "B"], "resize": [32, 64]}
    first = CachedDataset(Synthia(tmp_path / "sy", "all", **options), tmp_path / "cache")
    first.fill(progress=False)
    second = CachedDataset(Synthia(tmp_path / "sy", "all", **options), tmp_path / "cache")
    assert second.cache.directory == first.cache.directory
    monkeypatch.setattr(Synthia, "load", lambda self, i: pytest.fail("decoded a cached frame"))
    image, mask = second[1]
    assert image.shape == (32, 64, 3) and mask.shape == (32, 64)  # resized frames are what is stored


def test_other_options_or_changed_files_make_a_new_cache(tmp_path):
    make_synthia_seqs(tmp_path / "sy", frames=2, sides=["Stereo_Left"], cameras=["Omni_F"])
    one = {"sides": ["Left"], "cameras": ["F"]}
    a = CachedDataset(Synthia(tmp_path / "sy", "all", resize=[32, 64], **one), tmp_path / "cache")
    b = CachedDataset(Synthia(tmp_path / "sy", "all", resize=[64, 64], **one), tmp_path / "cache")
    c = CachedDataset(Synthia(tmp_path / "sy", "all", resize=[32, 64], void_as_class=False, **one), tmp_path / "cache")
    make_synthia_seqs(tmp_path / "sy", frames=2, sides=["Stereo_Left"], cameras=["Omni_F"], seed=1, size=(24, 41))  # new pixels
    d = CachedDataset(Synthia(tmp_path / "sy", "all", resize=[32, 64], **one), tmp_path / "cache")
    assert len({a.cache.directory, b.cache.directory, c.cache.directory, d.cache.directory}) == 4


def test_transforms_run_after_the_cache_and_stay_seeded(tmp_path):
    make_folder(tmp_path / "f", frames={"train": 2})
    cfg = {
        "_target_": "recallseg.data.folder.FolderDataset", "root": str(tmp_path / "f"), "cache": True, "cache_dir": str(tmp_path / "cache"),
        "size_divisor": 32,
        "train_transform": [{"_target_": "recallseg.pipeline.transforms.RandomScaleCrop", "height": 32, "width": 32, "fill_mask": 255}],
    }
    cached, plain = build_dataset(cfg, "train"), build_dataset({**cfg, "cache": False}, "train")
    assert isinstance(cached, CachedDataset)
    for key in [(0, 7), (1, 7), (0, 8), (0, 7)]:
        (image, mask), (ref_image, ref_mask) = cached[key], plain[key]
        assert image.shape == (32, 32, 3) and np.array_equal(image, ref_image) and np.array_equal(mask, ref_mask)


def test_returned_arrays_are_writable_copies(tmp_path):
    make_folder(tmp_path / "f", frames={"train": 1})
    cached = CachedDataset(FolderDataset(tmp_path / "f", "train"), tmp_path / "cache")
    cached.fill(progress=False)
    image, mask = cached[0]
    image[:] = 0
    assert cached[0][0].any()  # the cache itself is untouched
    assert image.flags.writeable and mask.flags.writeable


def test_survives_pickling_for_worker_processes(tmp_path):
    make_folder(tmp_path / "f", frames={"train": 2})
    cached = CachedDataset(FolderDataset(tmp_path / "f", "train"), tmp_path / "cache")
    cached.fill(progress=False)
    clone = pickle.loads(pickle.dumps(cached))
    assert_same_frames(clone, FolderDataset(tmp_path / "f", "train"))


def test_datasets_without_file_headers_are_cached_too(tmp_path):
    plain = SyntheticStreets("val", height=32, width=64, num_val=3)
    cached = CachedDataset(SyntheticStreets("val", height=32, width=64, num_val=3), tmp_path / "cache")
    assert_same_frames(cached, plain)
    assert_same_frames(cached, plain)


def test_a_transformed_source_is_refused(tmp_path):
    with pytest.raises(ValueError, match="transform=None"):
        CachedDataset(SyntheticStreets("val", num_val=1, transform=lambda **kw: kw), tmp_path)
