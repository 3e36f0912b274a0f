"""SYNTHIA: the paper's SYNTHIA-SEQS, and SYNTHIA-RAND-CITYSCAPES mapped onto Cityscapes classes.

Both keep labels in 16-bit, 3-channel PNGs whose first (R) channel is the class id and whose
second is the instance id. OpenCV decodes BGR, so the class is channel 2 of
``cv2.imread(path, cv2.IMREAD_UNCHANGED)``.

Neither comes with a train/val/test split: ``split`` is a seeded train/val/test partition, or
``all`` for every frame; ``synthia_splits.py`` describes the two procedures (``split_procedure``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from recallseg.data.base import FilePairDataset, Sample
from recallseg.data.files import read_label
from recallseg.data.labels import check_label_values, checked_ignore_index, lookup_table
from recallseg.data.layout import layout_error, list_files, pair_files, require_samples
from recallseg.data.synthia_splits import SPLIT_PROCEDURES, split_positions
from recallseg.data.walk import Walk

LABEL_CHANNEL = 2  # R in OpenCV's BGR order

SEQS_CLASSES = (
    "void", "sky", "building", "road", "sidewalk", "fence", "vegetation", "pole", "car", "traffic sign",
    "pedestrian", "bicycle", "lanemarking", "reserved 13", "reserved 14", "traffic light",
)  # fmt: skip
SEQS_PALETTE = (
    (0, 0, 0), (128, 128, 128), (128, 0, 0), (128, 64, 128), (0, 0, 192), (64, 64, 128), (128, 128, 0),
    (192, 192, 128), (64, 0, 128), (192, 128, 128), (64, 64, 0), (0, 128, 192), (0, 172, 0),
    (0, 60, 100), (0, 80, 100), (0, 128, 128),
)  # fmt: skip
SIDES = ("Stereo_Left", "Stereo_Right")
CAMERAS = ("Omni_B", "Omni_F", "Omni_L", "Omni_R")
SEQS_LAYOUT = """\
  SEQUENCE/RGB/{Stereo_Left,Stereo_Right}/{Omni_B,Omni_F,Omni_L,Omni_R}/000000.png
  SEQUENCE/GT/LABELS/{Stereo_Left,Stereo_Right}/{Omni_B,Omni_F,Omni_L,Omni_R}/000000.png
  (SEQUENCE e.g. SYNTHIA-SEQS-05-SUMMER)"""

# SYNTHIA-RAND-CITYSCAPES: 23 raw ids; the usual 16 classes shared with Cityscapes.
RAND_NUM_IDS = 23
RAND_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
    "sky", "person", "rider", "car", "bus", "motorcycle", "bicycle",
)  # fmt: skip
RAND_PALETTE = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
    (250, 170, 30), (220, 220, 0), (107, 142, 35), (70, 130, 180), (220, 20, 60), (255, 0, 0),
    (0, 0, 142), (0, 60, 100), (0, 0, 230), (119, 11, 32),
)  # fmt: skip
RAND_ID_TO_TRAIN_ID = {3: 0, 4: 1, 2: 2, 21: 3, 5: 4, 7: 5, 15: 6, 9: 7, 6: 8, 1: 9, 10: 10, 17: 11, 8: 12, 19: 13, 12: 14, 11: 15}
RAND_LAYOUT = """\
  RGB/0000000.png
  GT/LABELS/0000000.png"""


def _names(values: Sequence[str] | str | None, prefix: str, allowed: Sequence[str], what: str) -> list[str]:
    """Normalise ``["Left", "Stereo_Right"]`` style names to the on-disk ones."""
    if values is None:
        return list(allowed)
    if isinstance(values, str):
        values = [values]
    out = []
    for value in values:
        name = value if value.startswith(prefix) else prefix + value
        if name not in allowed:
            raise ValueError(f"unknown Synthia {what} {value!r}; choose from {list(allowed)}")
        out.append(name)
    return out


class _SynthiaBase(FilePairDataset):
    uniform_label_hint = (
        " (a SYNTHIA label keeps the class id in the R channel of a 16-bit PNG: one saved in another channel order "
        "reads as all void)"
    )

    def __init__(self, root, split, transform, resize, seed, split_fractions, ignore_index):
        super().__init__(root, split, transform=transform, resize=resize)
        self.ignore_index = checked_ignore_index(type(self).__name__, ignore_index, len(self.classes))
        self.seed = int(seed)
        self.split_fractions = tuple(float(f) for f in split_fractions)

    def read_raw_label(self, path: Path) -> np.ndarray:
        return read_label(path, channel=LABEL_CHANNEL)

    def _select(self, pairs: list[tuple[str, Path, Path]], procedure: str = "recallseg") -> list[Sample]:
        """The samples of ``self.split`` among ``(relative path, image, label)`` pairs; an empty split is refused."""
        positions = split_positions([key for key, _, _ in pairs], self.split, self.seed, self.split_fractions, procedure)
        why = f"split_fractions {list(self.split_fractions)} (seed {self.seed}, split_procedure {procedure}) give it none of the {len(pairs)} frames"
        require_samples(type(self).__name__, self.split, len(positions), self.root, why, "give it a larger fraction, add frames, or use split=all")
        return [Sample(pairs[i][1], pairs[i][2]) for i in positions]


class Synthia(_SynthiaBase):
    """SYNTHIA-SEQS (the paper's Synthia): 16 classes, ids 0..15 (13 and 14 reserved).

    Args:
        root: the directory holding the sequence directories.
        split: ``train``, ``val``, ``test`` (a seeded 70/10/20 split) or ``all``.
        sequences: sequence directory names, e.g. ``[SYNTHIA-SEQS-05-SUMMER]``.
        sides: stereo sides, ``Stereo_Left``/``Stereo_Right`` (or ``Left``/``Right``); default both.
        cameras: ``Omni_B``, ``Omni_F``, ``Omni_L``, ``Omni_R`` (or ``B``...); default all four.
        void_as_class: keep void (0) as class 0, as the paper does; False maps it to ``ignore_index``
            (the class list keeps its 16 names so ids stay those of the files).
        seed: the split seed (the paper uses 0).
        split_fractions: train/val/test fractions.
        split_procedure: ``recallseg`` (one permutation of all frames, rounded cut-offs) or
            ``authors`` (the paper code's: per side/camera directory, ``random.seed`` + shuffle,
            truncated cut-offs); see ``synthia_splits``.
        ignore_index: the value of ignored pixels (255).
        resize: optional ``[height, width]`` applied when loading (the paper: ``[384, 768]``).
        transform: optional albumentations-style transform.
    """

    classes = SEQS_CLASSES
    palette = SEQS_PALETTE

    def __init__(
        self,
        root,
        split: str = "train",
        sequences: Sequence[str] = ("SYNTHIA-SEQS-05-SUMMER",),
        sides: Sequence[str] | None = None,
        cameras: Sequence[str] | None = None,
        void_as_class: bool = True,
        seed: int = 0,
        split_fractions: Sequence[float] = (0.7, 0.1, 0.2),
        ignore_index: int = 255,
        resize: Sequence[int] | None = None,
        transform=None,
        split_procedure: str = "recallseg",
    ):
        super().__init__(root, split, transform, resize, seed, split_fractions, ignore_index)
        if split_procedure not in SPLIT_PROCEDURES:
            raise ValueError(f"split_procedure must be one of {list(SPLIT_PROCEDURES)}, got {split_procedure!r}")
        self.split_procedure = split_procedure
        if isinstance(sequences, str):
            sequences = [sequences]
        if not sequences:
            raise ValueError("Synthia needs at least one sequence, e.g. sequences=[SYNTHIA-SEQS-05-SUMMER]")
        self.sequences = [str(s) for s in sequences]
        self.sides = _names(sides, "Stereo_", SIDES, "side")
        self.cameras = _names(cameras, "Omni_", CAMERAS, "camera")
        self.void_as_class = bool(void_as_class)
        self.known = np.ones(len(SEQS_CLASSES), dtype=bool)
        mapping = {i: i for i in range(len(SEQS_CLASSES))}
        if not self.void_as_class:
            mapping[0] = self.ignore_index
        self.lookup = lookup_table(mapping, len(SEQS_CLASSES), self.ignore_index, self.mask_dtype())
        self.samples = self._select(self._find_pairs(), self.split_procedure)

    def options(self) -> dict[str, Any]:
        return {
            "sequences": self.sequences, "sides": self.sides, "cameras": self.cameras, "void_as_class": self.void_as_class,
            "seed": self.seed, "split_fractions": self.split_fractions, "split_procedure": self.split_procedure,
        }  # fmt: skip

    def _find_pairs(self) -> list[tuple[str, Path, Path]]:
        if not self.root.is_dir():
            raise layout_error("Synthia", self.root, SEQS_LAYOUT, f"root {self.root} is not a directory")
        pairs, walk = [], Walk(f"Synthia {self.split}", self.root)
        for sequence in self.sequences:
            seq_dir = self.root / sequence
            if not seq_dir.is_dir():
                hint = ""
                if (self.root / "RGB").is_dir() and (self.root / "GT").is_dir():
                    hint = f"root looks like a sequence directory itself; set root to {self.root.parent} and sequences=[{self.root.name}]"
                raise layout_error("Synthia", self.root, SEQS_LAYOUT, f"sequence {sequence!r} not found", self.root, hint)
            for side in self.sides:
                for camera in self.cameras:
                    image_dir = seq_dir / "RGB" / side / camera
                    label_dir = seq_dir / "GT" / "LABELS" / side / camera
                    if not image_dir.is_dir():
                        found = next((d for d in (image_dir.parent, image_dir.parent.parent, seq_dir) if d.is_dir()), seq_dir)
                        raise layout_error("Synthia", self.root, SEQS_LAYOUT, f"no image directory {image_dir}", found)
                    if not label_dir.is_dir():
                        found = next((d for d in (label_dir.parent, label_dir.parent.parent, seq_dir / "GT", seq_dir) if d.is_dir()), seq_dir)
                        raise layout_error("Synthia", self.root, SEQS_LAYOUT, f"no label directory {label_dir}", found)
                    images = {p.name: p for p in list_files(image_dir, ".png", walk=walk, kind="a PNG frame")}
                    labels = {p.name: p for p in list_files(label_dir, ".png", walk=walk, kind="a PNG label")}
                    expected_label, expected_image = (lambda k, d=label_dir: d / k), (lambda k, d=image_dir: d / k)
                    for image, label in pair_files("Synthia", images, labels, expected_label, expected_image):
                        pairs.append((f"{sequence}/{side}/{camera}/{image.name}", image, label))
        walk.report()
        if not pairs:
            raise layout_error("Synthia", self.root, SEQS_LAYOUT, "no PNG frames found", self.root / self.sequences[0] / "RGB")
        return pairs

    def check_raw_label(self, raw: np.ndarray, path: Path) -> None:
        check_label_values(raw, self.known, path, "SYNTHIA-SEQS class ids")

    def decode_label(self, raw: np.ndarray, path: Path) -> np.ndarray:
        return self.lookup[raw]


class SynthiaRandCityscapes(_SynthiaBase):
    """SYNTHIA-RAND-CITYSCAPES with the usual 16 classes shared with Cityscapes (ids 0..15).

    The 23 raw ids map onto the 16 classes (road 3->0, ..., bicycle 11->15, see
    ``RAND_ID_TO_TRAIN_ID``); the other ids are ignored. The dataset has no official split:
    ``split`` is a seeded train/val/test partition, or ``all`` for the whole set (the usual
    choice when Synthia is the training domain and Cityscapes val the test set).

    Args:
        root: the directory holding ``RGB/`` and ``GT/LABELS/``.
        split: ``train``, ``val``, ``test`` or ``all``.
        seed, split_fractions: the split (70/10/20, seed 0 by default).
        ignore_index: the value of ignored pixels (255).
        resize: optional ``[height, width]`` applied when loading.
        transform: optional albumentations-style transform.
    """

    classes = RAND_CLASSES
    palette = RAND_PALETTE

    def __init__(
        self,
        root,
        split: str = "train",
        seed: int = 0,
        split_fractions: Sequence[float] = (0.7, 0.1, 0.2),
        ignore_index: int = 255,
        resize: Sequence[int] | None = None,
        transform=None,
    ):
        super().__init__(root, split, transform, resize, seed, split_fractions, ignore_index)
        self.known = np.ones(RAND_NUM_IDS, dtype=bool)
        self.lookup = lookup_table(RAND_ID_TO_TRAIN_ID, RAND_NUM_IDS, self.ignore_index, self.mask_dtype())
        self.samples = self._select(self._find_pairs())

    def options(self) -> dict[str, Any]:
        return {"seed": self.seed, "split_fractions": self.split_fractions}

    def _find_pairs(self) -> list[tuple[str, Path, Path]]:
        image_dir, label_dir = self.root / "RGB", self.root / "GT" / "LABELS"
        for directory in (image_dir, label_dir):
            if not directory.is_dir():
                found = label_dir.parent if directory == label_dir and label_dir.parent.is_dir() else self.root
                raise layout_error("SynthiaRandCityscapes", self.root, RAND_LAYOUT, f"no directory {directory}", found)
        walk = Walk(f"SynthiaRandCityscapes {self.split}", self.root)
        images = {p.name: p for p in list_files(image_dir, ".png", walk=walk, kind="a PNG frame")}
        labels = {p.name: p for p in list_files(label_dir, ".png", walk=walk, kind="a PNG label")}
        walk.report()
        if not images:
            raise layout_error("SynthiaRandCityscapes", self.root, RAND_LAYOUT, f"no PNG frames in {image_dir}", image_dir)
        pairs = pair_files("SynthiaRandCityscapes", images, labels, lambda k: label_dir / k, lambda k: image_dir / k)
        return [(image.name, image, label) for image, label in pairs]

    def check_raw_label(self, raw: np.ndarray, path: Path) -> None:
        check_label_values(raw, self.known, path, "SYNTHIA-RAND class ids")

    def decode_label(self, raw: np.ndarray, path: Path) -> np.ndarray:
        return self.lookup[raw]


__all__ = ["Synthia", "SynthiaRandCityscapes"]
