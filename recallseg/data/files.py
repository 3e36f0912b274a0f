"""Image and label files: decoding them, reading PNG headers, and the identity of a file on disk.

Decoding stays in uint8/uint16 with OpenCV; there is no float work on the CPU. Every failure is
a :class:`DatasetError` naming the file: missing, empty, unreadable or corrupt.

Pixels are read as stored: an EXIF orientation tag is never applied, to images or to labels.
OpenCV would rotate a colour image by its tag but never a label read unchanged, so applying it
to one and not the other would pair a rotated photo with an unrotated mask. Datasets warn when
an image that has a label carries an orientation (``exif_orientation``).
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import cv2
import numpy as np

from recallseg.errors import DatasetError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_PALETTE = 3  # the IHDR colour type of indexed-colour PNGs


def _imread(path: Path, flags: int) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"file not found: {path}")
    # cv2.imread cannot open non-ASCII paths on every platform; imdecode of the bytes can.
    data = np.fromfile(str(path), dtype=np.uint8)
    if data.size == 0:
        raise DatasetError(f"cannot decode {path}: the file is empty")
    try:
        array = cv2.imdecode(data, flags)
    except cv2.error as error:  # OpenCV refuses rather than returns None, e.g. over its pixel limit
        reason = " ".join(str(error).split())
        if "CV_IO_MAX_IMAGE" in reason:
            raise DatasetError(
                f"cannot decode {path}: the image is larger than OpenCV decodes (its check "
                f"{reason.rsplit(') ', 1)[-1].split(' in function')[0]} failed); raise the limit with the environment "
                "variable OPENCV_IO_MAX_IMAGE_PIXELS (and OPENCV_IO_MAX_IMAGE_WIDTH, OPENCV_IO_MAX_IMAGE_HEIGHT)"
            ) from None
        raise DatasetError(f"cannot decode {path}: OpenCV refuses it ({reason})") from None
    if array is None:
        raise DatasetError(f"cannot decode {path}: unreadable or corrupt image file ({data.size} bytes)")
    return array


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file into an HxWx3 uint8 RGB array (16-bit images are scaled to 8 bits), as stored:
    its EXIF orientation is not applied (see the module docstring)."""
    image = _imread(Path(path), cv2.IMREAD_COLOR_RGB | cv2.IMREAD_IGNORE_ORIENTATION)
    if image.dtype != np.uint8:  # IMREAD_COLOR already converts depth; defensive for exotic builds
        raise DatasetError(f"{path}: expected an 8-bit image, decoded {image.dtype}")
    return image


def read_label(path: str | os.PathLike, channel: int | None = None) -> np.ndarray:
    """Decode a label file unchanged (8 or 16 bit) into an HxW integer array.

    ``channel`` picks one channel of a multi-channel label in OpenCV's BGR order (Synthia keeps
    the class in R, which is channel 2). Without it the label must have one channel.
    """
    if channel is None and png_colour_type(path) == PNG_PALETTE:
        return read_palette_indices(Path(path))
    label = _imread(Path(path), cv2.IMREAD_UNCHANGED)
    if label.dtype not in (np.uint8, np.uint16):
        raise DatasetError(f"label {path}: expected 8- or 16-bit integers, decoded {label.dtype}")
    if channel is None:
        if label.ndim != 2:
            raise DatasetError(
                f"label {path} has {label.shape[2]} channels: it looks like a colour-coded mask, not a map of class ids; "
                "convert it to a single-channel 8-bit PNG whose pixel values are the class indices (each colour -> its class's "
                "position in the class list), or to a palette (mode P) PNG of those indices"
            )
        return label
    if label.ndim != 3 or label.shape[2] <= channel:
        channels = 1 if label.ndim == 2 else label.shape[2]
        raise DatasetError(f"label {path} has {channels} channel(s); expected the class id in channel {channel} (BGR order)")
    return np.ascontiguousarray(label[:, :, channel])


def read_palette_indices(path: Path) -> np.ndarray:
    """The pixel indices of a palette (mode P) PNG, as Pascal VOC stores class ids, ignoring the colours.

    OpenCV would expand the palette to colours; Pillow keeps the indices."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            if image.mode != "P":
                raise DatasetError(f"label {path}: expected a palette PNG, Pillow reads mode {image.mode}")
            return np.array(image, dtype=np.uint8)
    except DatasetError:
        raise
    except Exception as error:
        raise DatasetError(f"cannot decode {path}: unreadable or corrupt palette PNG ({type(error).__name__}: {error})") from None


def _png_header(path: str | os.PathLike, length: int) -> bytes | None:
    """The first ``length`` bytes of a PNG whose first chunk is IHDR, or None for any other file."""
    with open(path, "rb") as f:
        head = f.read(length)
    if len(head) < length or head[:8] != PNG_SIGNATURE or head[12:16] != b"IHDR":
        return None
    return head


def png_colour_type(path: str | os.PathLike) -> int | None:
    """The IHDR colour type of a PNG (0 grey, 2 RGB, 3 palette, 4 grey+alpha, 6 RGBA), or None for other files."""
    try:
        head = _png_header(path, 26)
    except OSError:
        return None  # read_label's decoding names the problem
    return None if head is None else head[25]


def png_size(path: str | os.PathLike) -> tuple[int, int] | None:
    """``(height, width)`` from a PNG header without decoding, or None for other files."""
    head = _png_header(path, 24)
    if head is None:
        return None
    width, height = struct.unpack(">II", head[16:24])
    return int(height), int(width)


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(height, width)`` of an image file as ``read_image`` decodes it, from its header where Pillow
    can read one (orientation not applied, as ``read_image`` does not), else by decoding it."""
    size = png_size(path)
    if size is not None:
        return size
    from PIL import Image

    try:
        with Image.open(path) as image:
            width, height = image.size
        return int(height), int(width)
    except Exception:  # decoding names the problem, or reads what Pillow cannot
        return read_image(path).shape[:2]


# The EXIF orientation tag's values that move pixels (1 is "as stored").
ORIENTATIONS = {2: "mirrored", 3: "rotated 180 degrees", 4: "flipped", 5: "transposed", 6: "rotated 90 degrees", 7: "transversed", 8: "rotated 270 degrees"}
EXIF_EXTENSIONS = (".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".png")


def exif_orientation(path: str | os.PathLike) -> int | None:
    """The EXIF orientation tag of an image file (1: as stored), or None when it has none or cannot tell.

    Reads the header only, never the pixels."""
    if not str(path).lower().endswith(EXIF_EXTENSIONS):
        return None
    from PIL import Image

    try:
        with Image.open(path) as image:
            value = image.getexif().get(0x0112)
    except Exception:  # decoding the pixels names any problem with the file
        return None
    return int(value) if isinstance(value, int) else None


def file_signature(path: str | os.PathLike) -> list:
    """``[resolved path, size, mtime ns, ctime ns, inode]``: what tells a replaced or edited file from the one seen before.

    Size and modification time alone can be put back by ``cp -p``, ``rsync -a`` or an archive over
    rewritten content; the change time and the inode cannot be set from user space, and any
    rewrite moves one of them."""
    path = Path(path)
    stat = path.stat()
    return [str(path.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino]
