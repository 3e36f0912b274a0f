"""Tiny dataset trees in the exact public on-disk layouts (as data/README.md describes them).

Images are smooth colour regions plus noise; labels are random blocks of known ids. Every
builder returns what it wrote, so tests can compare the loaded arrays with the ground truth.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

CITYSCAPES_CITIES = {"train": ["aachen", "bochum"], "val": ["frankfurt"], "test": ["berlin"]}
SYNTHIA_SEQUENCE = "SYNTHIA-SEQS-05-SUMMER"


def official_train_ids(label_ids: np.ndarray) -> np.ndarray:
    """cityscapesscripts' train ids of Cityscapes label ids (uint8), its two ignore spellings (255 and -1) as 255.

    Written from the official label list, not from recallseg's tables, so the trees test them.
    """
    from cityscapesscripts.helpers.labels import labels

    table = np.full(256, 255, np.uint8)
    for label in labels:
        if label.id >= 0 and 0 <= label.trainId < 19:
            table[label.id] = label.trainId
    return table[label_ids]


def write_rgb(path: Path, image: np.ndarray) -> Path:
    """Write an RGB uint8 image as PNG (OpenCV wants BGR)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)), path
    return path


def write_array(path: Path, array: np.ndarray) -> Path:
    """Write an array as is (1 channel, or 3 channels in BGR order; 8 or 16 bit)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array), path
    return path


def random_image(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A photo-like RGB uint8 image: a few flat colour blocks, a gradient and noise."""
    image = np.empty((height, width, 3), np.float32)
    image[:] = rng.uniform(40, 200, 3)
    for _ in range(4):
        y, x = rng.integers(0, height), rng.integers(0, width)
        image[y : y + height // 2, x : x + width // 3] = rng.uniform(0, 255, 3)
    image += np.linspace(0, 30, width, dtype=np.float32)[None, :, None]
    image += rng.normal(0, 4, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def random_labels(rng: np.random.Generator, height: int, width: int, values: Sequence[int], block: int = 8) -> np.ndarray:
    """An HxW label map of ``block``-sized squares of values drawn from ``values``."""
    grid = rng.choice(np.asarray(values), size=(-(-height // block), -(-width // block)))
    return np.kron(grid, np.ones((block, block), dtype=grid.dtype))[:height, :width]


def make_cityscapes(
    root: Path,
    frames: dict[str, int] | None = None,
    size: tuple[int, int] = (32, 64),
    train_ids_for: Sequence[str] = (),
    test_labels: bool = False,
    seed: int = 0,
) -> dict[str, list[tuple[Path, np.ndarray]]]:
    """A gtFine tree; returns ``{split: [(image path, label ids), ...]}`` in sorted order.

    ``train_ids_for``: splits that also get ``_gtFine_labelTrainIds.png`` files.
    ``test_labels``: whether the test split gets label files (the public one has none).
    """
    frames = frames or {"train": 2, "val": 1}
    rng = np.random.default_rng(seed)
    written: dict[str, list[tuple[Path, np.ndarray]]] = {}
    for split, count in frames.items():
        written[split] = []
        for i in range(count):
            city = CITYSCAPES_CITIES[split][i % len(CITYSCAPES_CITIES[split])]
            stem = f"{city}_{i:06d}_{19 + i:06d}"
            image_path = write_rgb(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", random_image(rng, *size))
            ids = random_labels(rng, *size, values=range(34), block=4).astype(np.uint8)
            if split != "test" or test_labels:
                write_array(root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png", ids)
                if split in train_ids_for:
                    train_ids = official_train_ids(ids)
                    write_array(root / "gtFine" / split / city / f"{stem}_gtFine_labelTrainIds.png", train_ids)
            written[split].append((image_path, ids))
        written[split].sort(key=lambda item: (item[0].parent.name, item[0].name))
    return written


def synthia_label(rng: np.random.Generator, classes: np.ndarray) -> np.ndarray:
    """A SYNTHIA label PNG array: 16-bit, 3 channels in BGR order, class in R (index 2).

    The other channels hold different values on purpose (instance ids in G, junk in B), so a
    reader that takes the wrong channel fails.
    """
    height, width = classes.shape
    label = np.empty((height, width, 3), np.uint16)
    label[:, :, 2] = classes
    label[:, :, 1] = rng.integers(100, 1000, (height, width))
    label[:, :, 0] = rng.integers(20000, 60000, (height, width))
    return label


def make_synthia_seqs(
    root: Path,
    frames: int = 4,
    sequence: str = SYNTHIA_SEQUENCE,
    sides: Sequence[str] = ("Stereo_Left", "Stereo_Right"),
    cameras: Sequence[str] = ("Omni_B", "Omni_F", "Omni_L", "Omni_R"),
    size: tuple[int, int] = (24, 40),
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """A SYNTHIA-SEQS tree; returns ``{relative RGB path: class ids}``."""
    rng = np.random.default_rng(seed)
    written = {}
    for side in sides:
        for camera in cameras:
            for i in range(frames):
                name = f"{i:06d}.png"
                write_rgb(root / sequence / "RGB" / side / camera / name, random_image(rng, *size))
                classes = random_labels(rng, *size, values=range(16), block=4).astype(np.uint16)
                write_array(root / sequence / "GT" / "LABELS" / side / camera / name, synthia_label(rng, classes))
                written[f"{sequence}/RGB/{side}/{camera}/{name}"] = classes
    return written


def make_synthia_rand(root: Path, frames: int = 10, size: tuple[int, int] = (24, 40), seed: int = 0) -> dict[str, np.ndarray]:
    """A SYNTHIA-RAND-CITYSCAPES tree; returns ``{file name: raw class ids}``."""
    rng = np.random.default_rng(seed)
    written = {}
    for i in range(frames):
        name = f"{i:07d}.png"
        write_rgb(root / "RGB" / name, random_image(rng, *size))
        classes = random_labels(rng, *size, values=range(23), block=4).astype(np.uint16)
        write_array(root / "GT" / "LABELS" / name, synthia_label(rng, classes))
        written[name] = classes
    return written


FOLDER_CLASSES = ("background", "road", "car")


def make_folder(
    root: Path,
    layout: str = "subdirs",
    frames: dict[str, int] | None = None,
    size: tuple[int, int] = (32, 48),
    ignore_index: int = 255,
    seed: int = 0,
) -> dict[str, list[tuple[str, np.ndarray]]]:
    """A FolderDataset tree (``layout`` ``subdirs`` or ``lists``); returns ``{split: [(stem, mask), ...]}``."""
    frames = frames or {"train": 3, "val": 2}
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "classes.yaml").write_text(
        "classes: [background, road, car]\npalette: [[0, 0, 0], [128, 64, 128], [0, 0, 142]]\n"
    )
    written: dict[str, list[tuple[str, np.ndarray]]] = {}
    for split, count in frames.items():
        written[split] = []
        stems = []
        for i in range(count):
            stem = f"{split}_{i:03d}"
            sub = Path(split) if layout == "subdirs" else Path()
            write_rgb(root / "images" / sub / f"{stem}.png", random_image(rng, *size))
            mask = random_labels(rng, *size, values=[0, 1, 2, ignore_index], block=4).astype(np.uint8)
            write_array(root / "masks" / sub / f"{stem}.png", mask)
            written[split].append((stem, mask))
            stems.append(stem)
        if layout == "lists":
            (root / f"{split}.txt").write_text("\n".join(stems) + "\n")
    return written
