"""Cityscapes (gtFine), the 19 evaluation classes of the official benchmark.

Layout under ``root`` (the public download; see data/README.md)::

    leftImg8bit/{train,val,test}/CITY/CITY_SEQ_FRAME_leftImg8bit.png
    gtFine/{train,val,test}/CITY/CITY_SEQ_FRAME_gtFine_labelIds.png
    gtFine/{train,val,test}/CITY/CITY_SEQ_FRAME_gtFine_labelTrainIds.png   # optional

Label ids become train ids through one 256-entry lookup table (never id by id in place, whose
result would depend on the order of the ids). When cityscapesscripts' ``labelTrainIds`` file of
a frame is present it is read instead, with no mapping.

The test split has no public labels. When ``gtFine/test`` is absent or holds no label files,
``Cityscapes(root, "test")`` still lists the images and every mask is all ``ignore_index``
(``has_labels`` is False): fine for predicting and exporting, meaningless for scoring.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from recallseg.data.base import FilePairDataset, Sample
from recallseg.data.labels import check_label_values, checked_ignore_index, lookup_table
from recallseg.data.layout import layout_error, list_files, pair_files
from recallseg.data.walk import Walk
from recallseg.errors import DatasetError

CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
    "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
)  # fmt: skip
PALETTE = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
    (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
    (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
)  # fmt: skip

# label id -> train id of the 19 evaluated classes; every other id is ignored.
LABEL_ID_TO_TRAIN_ID = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
    23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}  # fmt: skip
TRAIN_ID_TO_LABEL_ID = np.array(sorted(LABEL_ID_TO_TRAIN_ID, key=LABEL_ID_TO_TRAIN_ID.get), dtype=np.uint8)
NUM_LABEL_IDS = 34  # ids 0..33; id -1 (license plate) is never drawn into labelIds images
# 8-bit label values a labelIds PNG may hold: 0..33, and 255 (-1 written as an unsigned byte by
# some third-party tools; ignored like cityscapesscripts' trainId -1).
KNOWN_LABEL_IDS = np.zeros(256, dtype=bool)
KNOWN_LABEL_IDS[:NUM_LABEL_IDS] = True
KNOWN_LABEL_IDS[255] = True
KNOWN_TRAIN_IDS = np.zeros(256, dtype=bool)
KNOWN_TRAIN_IDS[: len(CLASSES)] = True
KNOWN_TRAIN_IDS[255] = True

# The 16 classes shared with SYNTHIA-RAND-CITYSCAPES (terrain, truck and train dropped), for
# scoring Synthia-trained models on Cityscapes: 19-class train id -> 16-class id.
SYNTHIA16_CLASSES = tuple(name for name in CLASSES if name not in ("terrain", "truck", "train"))
TRAIN_ID_TO_SYNTHIA16 = {i: SYNTHIA16_CLASSES.index(name) for i, name in enumerate(CLASSES) if name in SYNTHIA16_CLASSES}
CLASS_SETS = ("cityscapes19", "synthia16")

SPLITS = ("train", "val", "test")
IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIXES = {"labelIds": "_gtFine_labelIds.png", "labelTrainIds": "_gtFine_labelTrainIds.png"}
# The rest of the public gtFine download: part of the layout, never read.
UNUSED_LABEL_FILES = ("_gtFine_color.png", "_gtFine_instanceIds.png", "_gtFine_polygons.json")
LAYOUT = """\
  leftImg8bit/{train,val,test}/CITY/CITY_SEQ_FRAME_leftImg8bit.png
  gtFine/{train,val,test}/CITY/CITY_SEQ_FRAME_gtFine_labelIds.png        (or _gtFine_labelTrainIds.png)"""


def train_ids_to_label_ids(train_ids: np.ndarray, fill: int = 0) -> np.ndarray:
    """Map predicted train ids (0..18) back to label ids, as the official evaluator reads them.

    Values outside 0..18 (ignore) become ``fill`` (0, "unlabeled").
    """
    table = np.full(256, fill, dtype=np.uint8)
    table[: len(TRAIN_ID_TO_LABEL_ID)] = TRAIN_ID_TO_LABEL_ID
    return table[np.clip(train_ids, 0, 255).astype(np.uint8)]


class Cityscapes(FilePairDataset):
    """Cityscapes gtFine with the 19 train ids; 255 (``ignore_index``) for everything else.

    Args:
        root: the directory holding ``leftImg8bit/`` and ``gtFine/``.
        split: ``train``, ``val`` or ``test``.
        label_type: ``auto`` (a frame's ``labelTrainIds`` file when present, else its
            ``labelIds`` through the lookup table), ``labelIds`` or ``labelTrainIds``.
        ignore_index: the value of ignored pixels (255).
        class_set: ``cityscapes19`` (the benchmark's 19 classes) or ``synthia16`` (the 16 classes
            shared with SYNTHIA-RAND-CITYSCAPES, same order and ids as ``SynthiaRandCityscapes``;
            terrain, truck and train are ignored), to score Synthia-trained models.
        resize: optional ``[height, width]`` applied when loading (see ``FilePairDataset``).
        transform: optional albumentations-style transform.
    """

    classes = CLASSES
    palette = PALETTE

    def __init__(
        self, root, split: str = "train", transform=None, label_type: str = "auto", ignore_index: int = 255,
        class_set: str = "cityscapes19", resize=None,
    ):  # fmt: skip
        super().__init__(root, split, transform=transform, resize=resize)
        if split not in SPLITS:
            raise ValueError(f"Cityscapes split must be one of {list(SPLITS)}, got {split!r}")
        if label_type not in ("auto", *LABEL_SUFFIXES):
            raise ValueError(f"Cityscapes label_type must be auto, labelIds or labelTrainIds, got {label_type!r}")
        if class_set not in CLASS_SETS:
            raise ValueError(f"Cityscapes class_set must be one of {list(CLASS_SETS)}, got {class_set!r}")
        self.ignore_index = checked_ignore_index("Cityscapes", ignore_index, len(CLASSES))
        self.label_type, self.class_set = label_type, class_set
        train_ids = {i: i for i in range(len(CLASSES))}
        if class_set == "synthia16":
            self.classes = SYNTHIA16_CLASSES
            self.palette = tuple(PALETTE[CLASSES.index(name)] for name in SYNTHIA16_CLASSES)
            train_ids = TRAIN_ID_TO_SYNTHIA16
        # raw value -> final id, one table per label file type (a lookup, never id by id in place)
        label_ids = {label_id: train_ids[t] for label_id, t in LABEL_ID_TO_TRAIN_ID.items() if t in train_ids}
        self.lookup = lookup_table(label_ids, 256, self.ignore_index, self.mask_dtype())
        self.train_id_lookup = lookup_table(train_ids, 256, self.ignore_index, self.mask_dtype())
        self.samples = self._find_samples()
        self.has_labels = all(sample.label is not None for sample in self.samples)

    def options(self) -> dict[str, Any]:
        return {"label_type": self.label_type, "class_set": self.class_set}

    def _find_samples(self) -> list[Sample]:
        image_dir = self.root / "leftImg8bit" / self.split
        label_dir = self.root / "gtFine" / self.split
        if not image_dir.is_dir():
            found = self.root / "leftImg8bit" if (self.root / "leftImg8bit").is_dir() else self.root
            hint = "root looks like leftImg8bit/ itself; set it to the directory above" if self.root.name == "leftImg8bit" else ""
            raise layout_error("Cityscapes", self.root, LAYOUT, f"no image directory {image_dir}", found, hint)
        walk = Walk(f"Cityscapes {self.split}", self.root)
        image_files = list_files(image_dir, IMAGE_SUFFIX, recursive=True, walk=walk, kind=f"a *{IMAGE_SUFFIX} image")
        images = {self._key(p, IMAGE_SUFFIX): p for p in image_files}
        if not images:
            walk.report()
            raise layout_error("Cityscapes", self.root, LAYOUT, f"no *{IMAGE_SUFFIX} files under {image_dir}", image_dir)

        labels = self._find_labels(label_dir, walk)
        walk.report()
        if not labels:
            if self.split == "test":  # no public test labels: all-ignore masks, see the module docstring
                return [Sample(images[k], None) for k in sorted(images)]
            found = label_dir if label_dir.is_dir() else self.root
            raise layout_error("Cityscapes", self.root, LAYOUT, f"no gtFine label files for split {self.split!r} under {label_dir}", found)
        suffix = LABEL_SUFFIXES["labelTrainIds" if self.label_type == "labelTrainIds" else "labelIds"]
        pairs = pair_files(
            "Cityscapes",
            images,
            labels,
            expected_label=lambda k: label_dir / (k + suffix),
            expected_image=lambda k: image_dir / (k + IMAGE_SUFFIX),
        )
        return [Sample(image, label) for image, label in pairs]

    def _find_labels(self, label_dir: Path, walk: Walk) -> dict[str, Path]:
        if not label_dir.is_dir():
            return {}
        files = list_files(label_dir, tuple(LABEL_SUFFIXES.values()), recursive=True, walk=walk, unused=UNUSED_LABEL_FILES, kind="a gtFine label")
        found = {kind: {self._key(p, suffix): p for p in files if p.name.endswith(suffix)} for kind, suffix in LABEL_SUFFIXES.items()}
        if self.label_type != "auto":
            return found[self.label_type]
        return {**found["labelIds"], **found["labelTrainIds"]}  # trainIds files win where both exist

    def _key(self, path: Path, suffix: str) -> str:
        """``CITY/CITY_SEQ_FRAME`` of an image or label file."""
        return f"{path.parent.name}/{path.name[: -len(suffix)]}"

    def check_raw_label(self, raw: np.ndarray, path: Path) -> None:
        if raw.dtype != np.uint8:
            raise DatasetError(f"label {path}: expected an 8-bit PNG of Cityscapes ids, decoded {raw.dtype}")
        if path.name.endswith(LABEL_SUFFIXES["labelTrainIds"]):
            check_label_values(raw, KNOWN_TRAIN_IDS, path, "train ids")
        else:
            check_label_values(raw, KNOWN_LABEL_IDS, path, "label ids")

    def decode_label(self, raw: np.ndarray, path: Path) -> np.ndarray:
        table = self.train_id_lookup if path.name.endswith(LABEL_SUFFIXES["labelTrainIds"]) else self.lookup
        return table[raw]
