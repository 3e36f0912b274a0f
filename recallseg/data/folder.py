"""FolderDataset: the user's own data, images and masks paired by file stem.

Layout under ``root``, splits as subdirectories::

    classes.yaml
    images/train/a.jpg      masks/train/a.png
    images/val/b.jpg        masks/val/b.png

or splits as list files (one stem per line, relative to images/ without extension)::

    classes.yaml   train.txt   val.txt        (or splits/train.txt, splits/val.txt)
    images/a.jpg   images/b.jpg
    masks/a.png    masks/b.png

Masks are single-channel 8- or 16-bit PNG (or TIFF/BMP) files of class ids ``0..C-1``, with
``ignore_index`` for pixels that take no part, or palette (mode P) PNGs whose pixel indices are
the class ids (the Pascal VOC convention; the palette's colours are not used). Any other value
is an error naming the file; so is a colour-coded (RGB) mask.

``classes.yaml`` names the classes and optionally gives a palette::

    classes: [background, road, car]
    palette: [[0, 0, 0], [128, 64, 128], [0, 0, 142]]      # optional

or, equivalently, ``classes: [{name: background, color: [0, 0, 0]}, ...]``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import yaml

from recallseg.data.base import FilePairDataset, Sample
from recallseg.data.files import IMAGE_EXTENSIONS
from recallseg.data.labels import check_label_values, checked_ignore_index
from recallseg.data.layout import layout_error, pair_files
from recallseg.data.walk import Walk
from recallseg.errors import DatasetError

MASK_EXTENSIONS = (".png", ".tif", ".tiff", ".bmp")
LAYOUT = """\
  classes.yaml
  images/SPLIT/NAME.{png,jpg,...}   masks/SPLIT/NAME.png      (splits as subdirectories)
or
  SPLIT.txt (or splits/SPLIT.txt, one NAME per line)
  images/NAME.{png,jpg,...}         masks/NAME.png            (splits as list files)"""


def read_classes_file(path: Path) -> tuple[list[str], list[tuple[int, int, int]] | None]:
    """Class names and the optional palette from a classes YAML file (see the module docstring)."""
    if not path.is_file():
        raise DatasetError(f"classes file not found: {path}\nit names the classes, e.g.\n  classes: [background, road, car]\n  palette: [[0, 0, 0], [128, 64, 128], [0, 0, 142]]  # optional")
    try:
        content = yaml.safe_load(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as error:
        raise DatasetError(f"classes file {path} is not UTF-8 text (byte 0x{error.object[error.start]:02x} at offset {error.start}); save it as UTF-8") from None
    except yaml.YAMLError as error:
        raise DatasetError(f"cannot parse classes file {path}: {' '.join(str(error).split())}") from None
    if isinstance(content, list):
        content = {"classes": content}
    if not isinstance(content, dict) or not isinstance(content.get("classes"), list) or not content["classes"]:
        raise DatasetError(f"classes file {path} must hold a non-empty list under 'classes', e.g. classes: [background, road, car]")
    names, colours = [], []
    for i, entry in enumerate(content["classes"]):
        if isinstance(entry, dict):
            if "name" not in entry:
                raise DatasetError(f"classes file {path}: entry {i} ({entry}) has no 'name'")
            names.append(entry["name"])
            colours.append(entry.get("color", entry.get("colour")))
        else:
            names.append(entry)
            colours.append(None)
    palette = content.get("palette")
    if palette is None and all(c is not None for c in colours):
        palette = colours
    return check_class_names(names, f"classes file {path}"), _check_palette(palette, len(names), f"classes file {path}")


def check_class_names(names: Sequence[Any], source: str) -> list[str]:
    """Class names must be distinct, non-empty strings (a YAML ``null``, number or ``yes`` is not one)."""
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if not isinstance(name, str) or not name.strip():
            raise DatasetError(f"{source}: class {i} has the name {name!r}; every class needs a non-empty name (quote names YAML reads as other values, e.g. 'null', 'yes', '1')")
        if name in seen:
            raise DatasetError(f"{source}: classes {seen[name]} and {i} are both named {name!r}; class names must be distinct")
        seen[name] = i
    return list(names)


def _check_palette(palette: Any, num_classes: int, source: str) -> list[tuple[int, int, int]] | None:
    if palette is None:
        return None
    expected = f"the palette must be a list of one [R, G, B] colour (integers 0..255) per class ({num_classes} classes)"
    if isinstance(palette, (str, bytes)) or not isinstance(palette, Sequence):
        raise DatasetError(f"{source}: {expected}, got {palette!r}")
    if len(palette) != num_classes:
        raise DatasetError(f"{source}: {expected}, got {len(palette)} colours")
    for i, colour in enumerate(palette):
        if (
            isinstance(colour, (str, bytes)) or not isinstance(colour, Sequence) or len(colour) != 3
            or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and 0 <= v <= 255 for v in colour)
        ):  # fmt: skip
            raise DatasetError(f"{source}: {expected}; colour {i} is {colour!r}")
    return [tuple(int(v) for v in c) for c in palette]


class FolderDataset(FilePairDataset):
    """Images and masks in ``root/images`` and ``root/masks``, paired by stem; see the module docstring.

    Args:
        root: the dataset directory.
        split: a split name (a subdirectory of images/ and masks/, or a ``SPLIT.txt`` list), or
            ``all`` for every image under images/.
        classes_file: the classes YAML, relative to ``root`` unless absolute.
        classes, palette: class names and colours given directly instead of ``classes_file``.
        ignore_index: the mask value of pixels that take no part (255).
        images_dir, masks_dir: the names of the two directories.
        resize: optional ``[height, width]`` applied when loading (see ``FilePairDataset``).
        transform: optional albumentations-style transform.
    """

    def __init__(
        self,
        root,
        split: str = "train",
        classes_file: str | None = "classes.yaml",
        classes: Sequence[str] | None = None,
        palette: Sequence[Sequence[int]] | None = None,
        ignore_index: int = 255,
        images_dir: str = "images",
        masks_dir: str = "masks",
        resize: Sequence[int] | None = None,
        transform=None,
    ):
        super().__init__(root, split, transform=transform, resize=resize)
        if not self.root.is_dir():
            raise layout_error("FolderDataset", self.root, LAYOUT, f"root {self.root} is not a directory")
        if classes is not None:
            self.classes = check_class_names(list(classes), "FolderDataset classes")
            self.palette = _check_palette(palette, len(self.classes), "FolderDataset palette")
        else:
            if classes_file is None:
                raise ValueError("FolderDataset needs classes_file or classes")
            path = Path(classes_file).expanduser()
            self.classes, file_palette = read_classes_file(path if path.is_absolute() else self.root / path)
            self.palette = _check_palette(palette, len(self.classes), "FolderDataset palette") if palette is not None else file_palette
        self.ignore_index = checked_ignore_index("FolderDataset", ignore_index, len(self.classes))
        size = max(len(self.classes), self.ignore_index + 1)
        self.known = np.zeros(size, dtype=bool)
        self.known[: len(self.classes)] = True
        if self.ignore_index >= 0:
            self.known[self.ignore_index] = True
        self.images_dir, self.masks_dir = self.root / images_dir, self.root / masks_dir
        self.samples = self._find_samples()

    def options(self) -> dict[str, Any]:
        return {"classes": list(self.classes), "images_dir": str(self.images_dir), "masks_dir": str(self.masks_dir)}

    def _find_samples(self) -> list[Sample]:
        for directory in (self.images_dir, self.masks_dir):
            if not directory.is_dir():
                raise layout_error("FolderDataset", self.root, LAYOUT, f"no directory {directory}")
        list_file = next((p for p in (self.root / f"{self.split}.txt", self.root / "splits" / f"{self.split}.txt") if p.is_file()), None)
        walk = Walk(f"FolderDataset {self.split}", self.root)
        if (self.images_dir / self.split).is_dir() or (self.masks_dir / self.split).is_dir():
            image_dir, mask_dir = self.images_dir / self.split, self.masks_dir / self.split
            images = self._by_stem(image_dir, IMAGE_EXTENSIONS, walk, "an image")
            masks = self._by_stem(mask_dir, MASK_EXTENSIONS, walk, f"a mask ({', '.join(MASK_EXTENSIONS)})")
        elif list_file is not None or self.split == "all":
            image_dir, mask_dir = self.images_dir, self.masks_dir
            images = self._by_stem(image_dir, IMAGE_EXTENSIONS, walk, "an image")
            masks = self._by_stem(mask_dir, MASK_EXTENSIONS, walk, f"a mask ({', '.join(MASK_EXTENSIONS)})")
            if list_file is not None:
                stems = [line.strip() for line in list_file.read_text().splitlines() if line.strip() and not line.startswith("#")]
                unknown = [s for s in stems if s not in images and s not in masks]
                if unknown:
                    raise DatasetError(
                        f"FolderDataset: {list_file} lists {len(unknown)} name(s) with neither image nor mask: "
                        + ", ".join(unknown[:5])
                        + (" ..." if len(unknown) > 5 else "")
                        + f" (looked for {image_dir}/NAME.* and {mask_dir}/NAME.*)"
                    )
                listed = set(stems)
                images = {k: v for k, v in images.items() if k in listed}
                masks = {k: v for k, v in masks.items() if k in listed}
        else:
            raise layout_error(
                "FolderDataset", self.root, LAYOUT,
                f"split {self.split!r} is neither a subdirectory {self.images_dir / self.split} nor a list file {self.root / (self.split + '.txt')}",
            )  # fmt: skip
        walk.report()
        if not images and not masks:
            raise layout_error("FolderDataset", self.root, LAYOUT, f"no images for split {self.split!r} in {image_dir}", image_dir)
        pairs = pair_files(
            "FolderDataset", images, masks,
            expected_label=lambda k: f"{mask_dir / k}{{{','.join(MASK_EXTENSIONS)}}}",
            expected_image=lambda k: f"{image_dir / k}.{{png,jpg,...}}",
        )  # fmt: skip
        return [Sample(image, mask) for image, mask in pairs]

    def _by_stem(self, directory: Path, extensions: Sequence[str], walk: Walk, kind: str) -> dict[str, Path]:
        """Files under ``directory`` keyed by relative path without extension; two files of one stem are an error."""
        found: dict[str, Path] = {}
        if not directory.is_dir():
            return found
        for path in walk.files(directory, extensions, kind=kind):
            key = path.relative_to(directory).with_suffix("").as_posix()
            if key in found:
                raise DatasetError(f"FolderDataset: two files share the name {key!r}: {found[key]} and {path}; keep one")
            found[key] = path
        return found

    def check_raw_label(self, raw: np.ndarray, path: Path) -> None:
        check_label_values(raw, self.known, path, f"mask values (classes 0..{len(self.classes) - 1}, ignore {self.ignore_index})")

    def decode_label(self, raw: np.ndarray, path: Path) -> np.ndarray:
        return raw.astype(self.mask_dtype(), copy=False)
