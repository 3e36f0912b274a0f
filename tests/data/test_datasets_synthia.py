"""SYNTHIA-SEQS and SYNTHIA-RAND-CITYSCAPES read from tiny trees in the public layouts."""

import random

import numpy as np
import pytest

from dataset_trees import SYNTHIA_SEQUENCE, make_synthia_rand, make_synthia_seqs, synthia_label, write_array
from recallseg.data import DatasetError
from recallseg.data.synthia import RAND_CLASSES, RAND_ID_TO_TRAIN_ID, Synthia, SynthiaRandCityscapes
from recallseg.data.synthia_splits import split_indices

OFFICIAL_16 = {3: 0, 4: 1, 2: 2, 21: 3, 5: 4, 7: 5, 15: 6, 9: 7, 6: 8, 1: 9, 10: 10, 17: 11, 8: 12, 19: 13, 12: 14, 11: 15}


@pytest.fixture(scope="module")
def seqs(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthia")
    return root, make_synthia_seqs(root, frames=5)


def relative(ds, index):
    return ds.samples[index].image.relative_to(ds.root).as_posix()


def test_the_class_comes_from_the_red_channel(seqs):
    root, written = seqs
    ds = Synthia(root, "train")
    assert ds.num_classes == 16 and ds.classes[0] == "void" and ds.ignore_index == 255
    for index in range(3):
        image, mask = ds[index]
        assert image.dtype == np.uint8 and mask.dtype == np.uint8
        assert np.array_equal(mask, written[relative(ds, index)])


def test_split_is_70_10_20_disjoint_and_complete(seqs):
    root, written = seqs
    splits = {name: {relative(ds, i) for i in range(len(ds))} for name in ("train", "val", "test") for ds in [Synthia(root, name)]}
    assert [len(splits[s]) for s in ("train", "val", "test")] == [28, 4, 8]  # 40 frames: 8 cameras x 5
    assert set.union(*splits.values()) == set(written)
    assert not (splits["train"] & splits["val"] or splits["train"] & splits["test"] or splits["val"] & splits["test"])


def test_split_depends_on_the_seed_not_on_listing_order(seqs, monkeypatch):
    root, _ = seqs
    reference = [s.image for s in Synthia(root, "val").samples]
    import recallseg.data.synthia as synthia_module

    real_list_files = synthia_module.list_files

    def shuffled(*args, **kwargs):
        files = real_list_files(*args, **kwargs)
        random.Random(len(files)).shuffle(files)
        return list(reversed(files))

    monkeypatch.setattr(synthia_module, "list_files", shuffled)
    assert [s.image for s in Synthia(root, "val").samples] == reference
    assert [s.image for s in Synthia(root, "val", seed=1).samples] != reference


def test_split_indices_partition():
    parts = [split_indices(101, s, 0, (0.7, 0.1, 0.2)) for s in ("train", "val", "test")]
    assert sorted(np.concatenate(parts).tolist()) == list(range(101))
    assert np.array_equal(split_indices(101, "train", 0, (0.7, 0.1, 0.2)), parts[0])


def test_void_can_be_ignored(seqs):
    root, written = seqs
    ds = Synthia(root, "train", void_as_class=False)
    mask, classes = ds[0][1], written[relative(ds, 0)]
    assert (mask[classes == 0] == 255).all() and np.array_equal(mask[classes != 0], classes[classes != 0])


def test_sides_and_cameras_select_directories(seqs):
    root, _ = seqs
    ds = Synthia(root, "all", sides=["Left"], cameras=["Omni_F", "B"])
    assert len(ds) == 10
    assert {s.image.parent.name for s in ds.samples} == {"Omni_F", "Omni_B"}
    assert {s.image.parent.parent.name for s in ds.samples} == {"Stereo_Left"}
    with pytest.raises(ValueError, match="unknown Synthia camera"):
        Synthia(root, "all", cameras=["Omni_X"])


def test_an_ignore_index_that_is_a_class_id_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"^Synthia ignore_index 15 collides with a class id \(0\.\.15\)$"):
        Synthia(tmp_path, ignore_index=15)
    with pytest.raises(ValueError, match=r"^SynthiaRandCityscapes ignore_index 0 collides with a class id \(0\.\.15\)$"):
        SynthiaRandCityscapes(tmp_path, ignore_index=0)


def test_resize_is_part_of_loading(seqs):
    root, _ = seqs
    image, mask = Synthia(root, "train", resize=[32, 64])[0]
    assert image.shape == (32, 64, 3) and mask.shape == (32, 64)


def test_a_missing_sequence_shows_the_layout_and_what_is_there(seqs):
    root, _ = seqs
    with pytest.raises(DatasetError, match="SYNTHIA-SEQS-02-SPRING") as error:
        Synthia(root, "train", sequences=["SYNTHIA-SEQS-02-SPRING"])
    assert SYNTHIA_SEQUENCE in str(error.value) and "GT/LABELS" in str(error.value)


def test_a_sequence_directory_given_as_root_gets_a_hint(seqs):
    root, _ = seqs
    with pytest.raises(DatasetError, match="looks like a sequence directory"):
        Synthia(root / SYNTHIA_SEQUENCE, "train")


def test_an_image_without_a_label_is_named(tmp_path):
    make_synthia_seqs(tmp_path, frames=2, sides=["Stereo_Left"], cameras=["Omni_F"])
    label = tmp_path / SYNTHIA_SEQUENCE / "GT" / "LABELS" / "Stereo_Left" / "Omni_F" / "000001.png"
    label.unlink()
    with pytest.raises(DatasetError, match="without a label") as error:
        Synthia(tmp_path, "all", sides=["Left"], cameras=["F"])
    assert "RGB/Stereo_Left/Omni_F/000001.png" in str(error.value)


def test_unknown_class_ids_name_the_file_and_values(tmp_path):
    make_synthia_seqs(tmp_path, frames=1, sides=["Stereo_Left"], cameras=["Omni_F"], size=(8, 8))
    rng = np.random.default_rng(0)
    classes = np.full((8, 8), 3, np.uint16)
    classes[0, 0] = 21
    path = write_array(tmp_path / SYNTHIA_SEQUENCE / "GT" / "LABELS" / "Stereo_Left" / "Omni_F" / "000000.png", synthia_label(rng, classes))
    with pytest.raises(DatasetError) as error:
        Synthia(tmp_path, "all", sides=["Left"], cameras=["F"])[0]
    assert str(path) in str(error.value) and "21" in str(error.value)


def test_a_single_channel_label_is_rejected_with_its_name(tmp_path):
    make_synthia_seqs(tmp_path, frames=1, sides=["Stereo_Left"], cameras=["Omni_F"], size=(8, 8))
    path = write_array(tmp_path / SYNTHIA_SEQUENCE / "GT" / "LABELS" / "Stereo_Left" / "Omni_F" / "000000.png", np.zeros((8, 8), np.uint16))
    with pytest.raises(DatasetError, match="channel") as error:
        Synthia(tmp_path, "all", sides=["Left"], cameras=["F"])[0]
    assert str(path) in str(error.value)


def test_rand_cityscapes_maps_the_16_classes(tmp_path):
    assert RAND_ID_TO_TRAIN_ID == OFFICIAL_16 and len(RAND_CLASSES) == 16
    written = make_synthia_rand(tmp_path, frames=10)
    ds = SynthiaRandCityscapes(tmp_path, "all")
    assert len(ds) == 10 and ds.num_classes == 16
    for index in range(2):
        raw = written[ds.samples[index].image.name]
        expected = np.vectorize(lambda v: OFFICIAL_16.get(int(v), 255))(raw)
        assert np.array_equal(ds[index][1], expected)
    sizes = [len(SynthiaRandCityscapes(tmp_path, s)) for s in ("train", "val", "test")]
    assert sizes == [7, 1, 2]


def test_rand_cityscapes_without_labels_directory_shows_the_layout(tmp_path):
    (tmp_path / "RGB").mkdir()
    with pytest.raises(DatasetError, match="GT/LABELS"):
        SynthiaRandCityscapes(tmp_path, "train")
