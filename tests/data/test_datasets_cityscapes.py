"""Cityscapes (gtFine) read from a tiny tree in the public layout."""

import numpy as np
import pytest
from cityscapesscripts.helpers.labels import labels as official_labels

from dataset_trees import make_cityscapes, official_train_ids, write_array
from recallseg.data import DatasetError
from recallseg.data.cityscapes import CLASSES, Cityscapes, train_ids_to_label_ids
from recallseg.data.synthia import RAND_CLASSES


def official_train_id(label) -> int:
    """cityscapesscripts' train id with its two ignore spellings (255 and -1) as 255."""
    return label.trainId if 0 <= label.trainId < 19 else 255


def test_lookup_table_equals_cityscapesscripts_for_every_id(tmp_path):
    make_cityscapes(tmp_path, frames={"train": 1}, size=(8, 16))
    ds = Cityscapes(tmp_path, "train")
    table = ds.lookup  # the table labelIds files are decoded through
    assert table.shape == (256,) and table.dtype == ds.mask_dtype() == np.uint8
    for label in official_labels:
        if label.id >= 0:
            assert table[label.id] == official_train_id(label), label.name
    # -1 (license plate) is never drawn into labelIds images; its 8-bit spelling 255 is ignored.
    plate = next(label for label in official_labels if label.id == -1)
    assert official_train_id(plate) == 255 and table[255] == 255
    assert (table[34:] == 255).all()
    # labelTrainIds files: train ids stay, every other value is ignored
    assert ds.train_id_lookup.tolist() == list(range(19)) + [255] * (256 - 19)


def test_class_names_follow_the_official_train_ids():
    names = {label.trainId: label.name for label in official_labels if 0 <= label.trainId < 19}
    assert tuple(names[i] for i in range(19)) == CLASSES


def test_train_ids_map_back_to_label_ids():
    train_ids = np.array([[0, 10, 18, 255]])
    assert train_ids_to_label_ids(train_ids).tolist() == [[7, 23, 33, 0]]


def test_loads_images_and_train_ids(tmp_path):
    written = make_cityscapes(tmp_path, frames={"train": 3, "val": 1})
    ds = Cityscapes(tmp_path, "train")
    assert len(ds) == 3 and ds.num_classes == 19 and ds.ignore_index == 255 and len(ds.palette) == 19
    for index, (image_path, ids) in enumerate(written["train"]):
        image, mask = ds[index]
        assert image.dtype == np.uint8 and image.shape == (*ids.shape, 3)
        assert mask.dtype == np.uint8  # ids 0..18 and ignore 255: the compact dtype
        assert np.array_equal(mask, official_train_ids(ids))
        assert str(image_path) in ds.describe(index)


def test_prefers_label_train_ids_files(tmp_path):
    make_cityscapes(tmp_path, frames={"val": 2}, train_ids_for=["val"])
    ds = Cityscapes(tmp_path, "val")
    assert all(s.label.name.endswith("_gtFine_labelTrainIds.png") for s in ds.samples)
    by_ids = Cityscapes(tmp_path, "val", label_type="labelIds")
    assert all(s.label.name.endswith("_gtFine_labelIds.png") for s in by_ids.samples)
    for i in range(2):
        assert np.array_equal(ds[i][1], by_ids[i][1])


def test_test_split_without_labels_gives_all_ignore_masks(tmp_path):
    make_cityscapes(tmp_path, frames={"test": 2})
    ds = Cityscapes(tmp_path, "test")
    assert len(ds) == 2 and not ds.has_labels
    image, mask = ds[0]
    assert mask.shape == image.shape[:2] and (mask == 255).all()


def test_a_missing_root_shows_the_expected_layout(tmp_path):
    with pytest.raises(DatasetError, match="leftImg8bit/") as error:
        Cityscapes(tmp_path / "nowhere", "train")
    assert "does not exist" in str(error.value) and "gtFine" in str(error.value)


def test_a_wrong_root_shows_what_was_found(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(DatasetError) as error:
        Cityscapes(tmp_path, "train")
    assert "images/" in str(error.value) and "CITY_SEQ_FRAME_leftImg8bit.png" in str(error.value)


def test_an_image_without_a_label_is_named(tmp_path):
    written = make_cityscapes(tmp_path, frames={"train": 2})
    label = tmp_path / "gtFine" / "train" / "aachen" / "aachen_000000_000019_gtFine_labelIds.png"
    label.unlink()
    with pytest.raises(DatasetError, match="image\\(s\\) without a label") as error:
        Cityscapes(tmp_path, "train")
    assert str(written["train"][0][0]) in str(error.value) and label.name in str(error.value)


def test_a_label_without_an_image_is_named(tmp_path):
    make_cityscapes(tmp_path, frames={"train": 2})
    image = tmp_path / "leftImg8bit" / "train" / "bochum" / "bochum_000001_000020_leftImg8bit.png"
    image.unlink()
    with pytest.raises(DatasetError, match="label\\(s\\) without an image") as error:
        Cityscapes(tmp_path, "train")
    assert "bochum_000001_000020_gtFine_labelIds.png" in str(error.value)


def test_unknown_label_ids_name_the_file_and_values(tmp_path):
    written = make_cityscapes(tmp_path, frames={"train": 1})
    ids = written["train"][0][1].copy()
    ids[0, 0], ids[1, 1] = 40, 77
    label = write_array(tmp_path / "gtFine" / "train" / "aachen" / "aachen_000000_000019_gtFine_labelIds.png", ids)
    ds = Cityscapes(tmp_path, "train")
    with pytest.raises(DatasetError) as error:
        ds[0]
    assert str(label) in str(error.value) and "40, 77" in str(error.value)


def test_size_mismatch_names_both_files(tmp_path):
    make_cityscapes(tmp_path, frames={"train": 1}, size=(32, 64))
    label = write_array(tmp_path / "gtFine" / "train" / "aachen" / "aachen_000000_000019_gtFine_labelIds.png", np.zeros((16, 64), np.uint8))
    with pytest.raises(DatasetError, match="sizes differ") as error:
        Cityscapes(tmp_path, "train")[0]
    assert str(label) in str(error.value) and "_leftImg8bit.png" in str(error.value)


def test_a_corrupt_png_is_named(tmp_path):
    written = make_cityscapes(tmp_path, frames={"train": 1})
    image_path = written["train"][0][0]
    image_path.write_bytes(image_path.read_bytes()[:40])
    with pytest.raises(DatasetError, match="cannot decode") as error:
        Cityscapes(tmp_path, "train")[0]
    assert str(image_path) in str(error.value)


def test_an_ignore_index_that_is_a_train_id_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"^Cityscapes ignore_index 18 collides with a class id \(0\.\.18\)$"):
        Cityscapes(tmp_path, "train", ignore_index=18)


def test_resize_applies_to_image_and_mask(tmp_path):
    make_cityscapes(tmp_path, frames={"train": 1}, size=(32, 64))
    image, mask = Cityscapes(tmp_path, "train", resize=[16, 32])[0]
    assert image.shape == (16, 32, 3) and mask.shape == (16, 32)


def test_the_synthia16_class_set_matches_synthia_rand_cityscapes(tmp_path):
    written = make_cityscapes(tmp_path, frames={"val": 1}, train_ids_for=["val"])
    for label_type in ("labelIds", "labelTrainIds"):
        ds = Cityscapes(tmp_path, "val", class_set="synthia16", label_type=label_type)
        assert tuple(ds.classes) == RAND_CLASSES and len(ds.palette) == 16
        train_ids = official_train_ids(written["val"][0][1])
        names = np.array([*CLASSES, *["ignore"] * (256 - 19)])[train_ids]
        expected = np.array([RAND_CLASSES.index(n) if n in RAND_CLASSES else 255 for n in names.ravel()]).reshape(names.shape)
        assert np.array_equal(ds[0][1], expected)
