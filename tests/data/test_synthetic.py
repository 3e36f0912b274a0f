import numpy as np

from recallseg.data import SyntheticStreets
from recallseg.pipeline.class_statistics import cached_class_statistics, class_statistics


def test_samples_are_deterministic_per_seed_and_differ_across_seeds():
    a, b = SyntheticStreets("train", 64, 96, seed=3), SyntheticStreets("train", 64, 96, seed=3)
    c = SyntheticStreets("train", 64, 96, seed=4)
    for i in range(3):
        assert np.array_equal(a[i][0], b[i][0]) and np.array_equal(a[i][1], b[i][1])
    assert not np.array_equal(a[0][0], c[0][0])
    assert not np.array_equal(a[0][0], SyntheticStreets("val", 64, 96, seed=3)[0][0])  # splits are disjoint streams


def test_sample_format_and_label_values():
    ds = SyntheticStreets("val", 64, 128, num_val=5)
    image, mask = ds[0]
    assert image.shape == (64, 128, 3) and image.dtype == np.uint8
    assert mask.shape == (64, 128) and mask.dtype == np.uint8
    assert len(ds) == 5 and ds.num_classes == 9
    values = set(np.unique(np.stack([ds[i][1] for i in range(5)])).tolist())
    assert values <= set(range(9)) | {255}


def test_class_frequencies_are_imbalanced_with_ignore_pixels():
    ds = SyntheticStreets("train", 96, 192, num_train=60)
    counts = class_statistics(ds, ds.num_classes, ds.ignore_index).pixel_counts.numpy().astype(float)
    freq = counts / counts.sum()
    names = list(ds.classes)
    dominant = [freq[names.index(n)] for n in ("road", "building", "sky")]
    rare = [freq[names.index(n)] for n in ("pedestrian", "traffic sign", "pole")]
    assert min(dominant) > 0.1 and max(rare) < 0.02 and min(rare) > 0
    ignored = sum(int((ds[i][1] == 255).sum()) for i in range(60))
    assert ignored > 0


def test_pixel_counts_match_numpy_and_are_cached(tmp_path):
    ds = SyntheticStreets("train", 64, 64, num_train=6)
    expected = np.zeros(9, dtype=np.int64)
    for i in range(6):
        m = ds[i][1]
        expected += np.bincount(m[m != 255], minlength=9)
    cfg = {"height": 64, "width": 64, "num_train": 6}
    counts = cached_class_statistics(ds, cfg, "train", tmp_path).pixel_counts
    assert counts.tolist() == expected.tolist()
    files = list(tmp_path.glob("class_stats_*.json"))
    assert len(files) == 1
    # A second call reads the file: poison the dataset to prove it is not recomputed.
    ds.load = None
    assert cached_class_statistics(ds, cfg, "train", tmp_path).pixel_counts.tolist() == expected.tolist()
    # A different config never reuses the cache.
    ds2 = SyntheticStreets("train", 64, 64, num_train=3)
    assert cached_class_statistics(ds2, {**cfg, "num_train": 3}, "train", tmp_path).pixel_counts.sum() < counts.sum()
