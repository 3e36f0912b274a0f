"""FolderDataset: the user's own images and masks, paired by stem."""

import cv2
import numpy as np
import pytest

from dataset_trees import make_folder, write_array, write_rgb
from recallseg.data import DatasetError
from recallseg.data.folder import FolderDataset


@pytest.mark.parametrize("layout", ["subdirs", "lists"])
def test_both_split_layouts_pair_images_and_masks_by_stem(tmp_path, layout):
    written = make_folder(tmp_path, layout=layout)
    for split in ("train", "val"):
        ds = FolderDataset(tmp_path, split)
        assert ds.classes == ["background", "road", "car"] and ds.palette[1] == (128, 64, 128) and ds.ignore_index == 255
        assert len(ds) == len(written[split])
        for index, (stem, mask) in enumerate(written[split]):
            assert ds.samples[index].image.stem == stem
            image, loaded = ds[index]
            assert image.dtype == np.uint8 and loaded.dtype == np.uint8 and np.array_equal(loaded, mask)


def test_classes_yaml_with_names_and_colours(tmp_path):
    make_folder(tmp_path)
    (tmp_path / "classes.yaml").write_text("classes:\n  - {name: bg, color: [0, 0, 0]}\n  - {name: road, color: [1, 2, 3]}\n  - {name: car, color: [4, 5, 6]}\n")
    ds = FolderDataset(tmp_path, "train")
    assert ds.classes == ["bg", "road", "car"] and ds.palette[2] == (4, 5, 6)


def test_a_configurable_ignore_index(tmp_path):
    written = make_folder(tmp_path, ignore_index=100)
    ds = FolderDataset(tmp_path, "train", ignore_index=100)
    assert np.array_equal(ds[0][1], written["train"][0][1])
    with pytest.raises(DatasetError, match="100"):  # 100 is not a class under the default ignore index
        FolderDataset(tmp_path, "train")[0]
    with pytest.raises(ValueError, match=r"^FolderDataset ignore_index 2 collides with a class id \(0\.\.2\)$"):
        FolderDataset(tmp_path, "train", ignore_index=2)


def test_a_missing_classes_file_explains_the_format(tmp_path):
    make_folder(tmp_path)
    (tmp_path / "classes.yaml").unlink()
    with pytest.raises(DatasetError, match="(?s)classes file not found.*classes: \\["):
        FolderDataset(tmp_path, "train")


def test_an_unknown_split_shows_both_layouts(tmp_path):
    make_folder(tmp_path)
    with pytest.raises(DatasetError, match="neither a subdirectory") as error:
        FolderDataset(tmp_path, "test")
    assert "SPLIT.txt" in str(error.value) and "images/" in str(error.value)


def test_an_empty_root_shows_the_expected_layout(tmp_path):
    (tmp_path / "classes.yaml").write_text("classes: [a, b]\n")
    with pytest.raises(DatasetError, match="no directory .*images") as error:
        FolderDataset(tmp_path, "train")
    assert "masks/SPLIT/NAME.png" in str(error.value) and "classes.yaml" in str(error.value)


def test_image_without_mask_and_mask_without_image_are_named(tmp_path):
    make_folder(tmp_path)
    (tmp_path / "masks" / "train" / "train_001.png").unlink()
    write_array(tmp_path / "masks" / "train" / "orphan.png", np.zeros((32, 48), np.uint8))
    with pytest.raises(DatasetError) as error:
        FolderDataset(tmp_path, "train")
    message = str(error.value)
    assert "images/train/train_001.png" in message and "without a label" in message
    assert "masks/train/orphan.png" in message and "without an image" in message


def test_a_list_file_naming_missing_files(tmp_path):
    make_folder(tmp_path, layout="lists")
    (tmp_path / "train.txt").write_text("train_000\nghost\n")
    with pytest.raises(DatasetError, match="ghost"):
        FolderDataset(tmp_path, "train")


def test_mask_values_outside_the_classes_name_the_file_and_values(tmp_path):
    make_folder(tmp_path)
    mask = np.zeros((32, 48), np.uint8)
    mask[3, 3], mask[4, 4] = 7, 9
    path = write_array(tmp_path / "masks" / "train" / "train_000.png", mask)
    with pytest.raises(DatasetError) as error:
        FolderDataset(tmp_path, "train")[0]
    assert str(path) in str(error.value) and "7, 9" in str(error.value)


def test_size_mismatch_names_both_files(tmp_path):
    make_folder(tmp_path)
    path = write_rgb(tmp_path / "images" / "train" / "train_002.png", np.zeros((20, 20, 3), np.uint8))
    with pytest.raises(DatasetError, match="sizes differ") as error:
        FolderDataset(tmp_path, "train")[2]
    assert str(path) in str(error.value) and "masks/train/train_002.png" in str(error.value)


def test_colour_masks_are_rejected_with_the_file_name(tmp_path):
    make_folder(tmp_path)
    path = write_rgb(tmp_path / "masks" / "train" / "train_000.png", np.zeros((32, 48, 3), np.uint8))
    with pytest.raises(DatasetError, match="3 channels") as error:
        FolderDataset(tmp_path, "train")[0]
    assert str(path) in str(error.value)


def test_an_unreadable_mask_is_named(tmp_path):
    make_folder(tmp_path)
    path = tmp_path / "masks" / "train" / "train_001.png"
    path.write_bytes(b"not a png at all")
    with pytest.raises(DatasetError, match="cannot decode") as error:
        FolderDataset(tmp_path, "train")[1]
    assert str(path) in str(error.value)


def write_palette_png(path, indices, colours):
    """A palette (mode P) PNG as Pascal VOC stores masks: pixel values are indices into ``colours``."""
    from PIL import Image

    image = Image.fromarray(indices.astype(np.uint8), mode="P")
    image.putpalette([value for colour in colours for value in colour])
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def test_palette_png_masks_are_read_as_class_indices(tmp_path):
    written = make_folder(tmp_path)
    mask = written["train"][0][1]
    colours = [(0, 0, 0), (128, 0, 0), (0, 128, 0)] + [(9, 9, 9)] * 252 + [(224, 224, 192)]  # VOC's ignore colour at 255
    write_palette_png(tmp_path / "masks" / "train" / "train_000.png", mask, colours)
    image, loaded = FolderDataset(tmp_path, "train")[0]
    assert np.array_equal(loaded, mask)  # the indices, not the colours
    bad = mask.copy()
    bad[0, 0] = 7
    path = write_palette_png(tmp_path / "masks" / "train" / "train_001.png", bad, colours)
    with pytest.raises(DatasetError, match="7") as error:  # indices are checked like any class ids
        FolderDataset(tmp_path, "train")[1]
    assert str(path) in str(error.value)


def test_png_headers_are_read_only_from_files_with_the_png_signature(tmp_path):
    from recallseg.data.files import PNG_PALETTE, image_size, png_colour_type, png_size

    grey = write_array(tmp_path / "grey.png", np.zeros((5, 7), np.uint8))
    palette = write_palette_png(tmp_path / "palette.png", np.zeros((5, 7), np.uint8), [(0, 0, 0)])
    assert png_size(grey) == png_size(palette) == (5, 7) and png_colour_type(grey) == 0 and png_colour_type(palette) == PNG_PALETTE
    jpeg = tmp_path / "frame.jpg"
    assert cv2.imwrite(str(jpeg), np.zeros((5, 7, 3), np.uint8))
    not_png = tmp_path / "fake.png"
    not_png.write_bytes(b"\x89PNX\r\n\x1a\n" + grey.read_bytes()[8:])
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(grey.read_bytes()[:20])
    for path in (jpeg, not_png, truncated):
        assert png_size(path) is None and png_colour_type(path) is None, path
    assert image_size(jpeg) == (5, 7)  # decoded when the header cannot tell
    assert png_colour_type(tmp_path / "missing.png") is None  # decoding names the missing file


def test_a_colour_coded_mask_is_refused_saying_how_to_convert_it(tmp_path):
    make_folder(tmp_path)
    write_rgb(tmp_path / "masks" / "train" / "train_000.png", np.full((32, 48, 3), 128, np.uint8))
    with pytest.raises(DatasetError, match="colour-coded") as error:
        FolderDataset(tmp_path, "train")[0]
    assert "single-channel 8-bit PNG" in str(error.value) and "palette (mode P) PNG" in str(error.value)


@pytest.mark.parametrize(
    "content, expected",
    [
        ("classes: [a, b, c]\npalette: 5\n", "palette must be a list"),
        ("classes: [a, b, c]\npalette: [[0, 0, 0], red, [1, 2, 3]]\n", "colour 1 is 'red'"),
        ("classes: [a, b, c]\npalette: [[0, 0, 0], [1, 2], [1, 2, 3]]\n", r"colour 1 is \[1, 2\]"),
        ("classes: [a, b, c]\npalette: [[0, 0, 0], [1, 2, 300], [1, 2, 3]]\n", r"colour 1 is \[1, 2, 300\]"),
        ("classes: [a, b, c]\npalette: [[0, 0, 0], [1, 2, 3]]\n", "got 2 colours"),
        ("classes: [a, null, c]\n", "class 1 has the name None"),
        ("classes: [a, '', c]\n", "class 1 has the name ''"),
        ("classes: [road, car, road]\n", "classes 0 and 2 are both named 'road'"),
        ("classes:\n  - {name: a, color: [0, 0, 0]}\n  - {name: b, color: blue}\n  - {name: c, color: [0, 0, 1]}\n", "colour 1 is 'blue'"),
    ],
)
def test_classes_yaml_mistakes_are_one_line_errors_naming_the_file(tmp_path, content, expected):
    make_folder(tmp_path)
    (tmp_path / "classes.yaml").write_text(content)
    with pytest.raises(DatasetError, match=expected) as error:
        FolderDataset(tmp_path, "train")
    assert str(tmp_path / "classes.yaml") in str(error.value) and "\n" not in str(error.value)


def test_a_classes_yaml_that_is_not_utf8_is_named(tmp_path):
    make_folder(tmp_path)
    (tmp_path / "classes.yaml").write_bytes("classes: [fond, route, voiture]\n# éé\n".encode("latin-1"))
    with pytest.raises(DatasetError, match="not UTF-8 text .*save it as UTF-8") as error:
        FolderDataset(tmp_path, "train")
    assert str(tmp_path / "classes.yaml") in str(error.value)


def test_classes_given_in_the_config_are_checked_too(tmp_path):
    make_folder(tmp_path)
    with pytest.raises(DatasetError, match="both named 'a'"):
        FolderDataset(tmp_path, "train", classes_file=None, classes=["a", "b", "a"])


def test_validation_batches_of_mixed_size_frames_score_each_frame_on_its_own(tmp_path):
    """Frames of different sizes in one evaluation batch are predicted one at a time: the confusion
    matrix equals the sum of per-frame matrices counted by hand (numpy)."""
    import torch

    from recallseg.evaluation.loop import evaluate
    from recallseg.evaluation.samples import evaluation_loader, evaluation_samples
    from recallseg.runtime.device import init_runtime
    from recallseg.runtime.normalize import Normalizer

    make_folder(tmp_path, frames={"val": 1})
    rng = np.random.default_rng(1)
    for i, (height, width) in enumerate([(20, 36), (40, 24), (32, 48)]):
        write_rgb(tmp_path / "images" / "val" / f"val_{i:03d}.png", rng.integers(0, 255, (height, width, 3), dtype=np.uint8))
        write_array(tmp_path / "masks" / "val" / f"val_{i:03d}.png", rng.integers(0, 3, (height, width), dtype=np.uint8))
    dataset = FolderDataset(tmp_path, "val")
    runtime = init_runtime("cpu", "off", False)
    torch.manual_seed(0)
    model = torch.nn.Conv2d(3, 3, 1).eval()  # pointwise: each frame's prediction is independent of padding
    normalizer = Normalizer([0.5, 0.5, 0.5], [0.25, 0.25, 0.25], runtime)
    samples = evaluation_samples({}, dataset, full_resolution=True)
    matrix = evaluate(model, evaluation_loader(samples, batch_size=3), normalizer, runtime, 3, 255).compute().numpy()
    expected = np.zeros((3, 3), np.int64)
    for index in range(len(dataset)):
        image, mask = dataset.load(index)
        x = (torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255 - 0.5) / 0.25
        prediction = model(x).argmax(1)[0].numpy()
        np.add.at(expected, (mask.astype(np.int64), prediction), 1)
    assert np.array_equal(matrix, expected)
