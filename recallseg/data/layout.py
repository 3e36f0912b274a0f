"""Finding a dataset's files under its root and pairing each image with its label.

A wrong root or a missing file is reported with the layout the dataset expects next to what is
actually there, and every unmatched image or label is named.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Mapping, Sequence

from recallseg.data.walk import Walk
from recallseg.errors import DatasetError


def describe_directory(path: Path, limit: int = 12) -> str:
    """A short listing of ``path`` for error messages (``does not exist`` when it does not)."""
    path = Path(path)
    if not path.exists():
        return f"{path} does not exist"
    if not path.is_dir():
        return f"{path} is a file, not a directory"
    entries = sorted(os.listdir(path))
    if not entries:
        return f"{path} is empty"
    shown = [name + ("/" if (path / name).is_dir() else "") for name in entries[:limit]]
    more = f" ... and {len(entries) - limit} more" if len(entries) > limit else ""
    return f"{path} contains: " + ", ".join(shown) + more


def layout_error(dataset: str, root: Path, expected: str, problem: str, found: Path | None = None, hint: str = "") -> DatasetError:
    """The error for a root that does not hold the expected layout."""
    message = (
        f"{dataset}: {problem}\n"
        f"expected layout under root={root}:\n{expected.rstrip()}\n"
        f"found: {describe_directory(found if found is not None else root)}\n"
        "set the root with dataset.root=/path/to/data or the RECALLSEG_DATA environment variable (see data/README.md)"
    )
    if hint:
        message += f"\nhint: {hint}"
    return DatasetError(message)


def list_files(
    directory: Path, suffix: str | Sequence[str], recursive: bool = False, walk: Walk | None = None, unused: Sequence[str] = (),
    kind: str = "an image",
) -> list[Path]:
    """Files of ``directory`` whose name ends with ``suffix`` (sorted), symbolic links followed.

    What the listing passes over is added to ``walk``, whose ``report`` names it; without one it
    is reported at once.
    """
    suffixes = (suffix,) if isinstance(suffix, str) else tuple(suffix)
    collector = walk if walk is not None else Walk(str(directory))
    files = collector.files(directory, suffixes, recursive=recursive, unused=unused, kind=kind)
    if walk is None:
        collector.report()
    return files


def require_samples(
    dataset: str, split: str, count: int, root: Path | None = None, why: str = "",
    fix: str = "point dataset.root at the data, change the dataset's split options, or choose another split",
) -> None:
    """Refuse an empty split: training on it ends without a score, scoring it writes only n/a."""
    if count == 0:
        where = f" under {root}" if root is not None else ""
        raise DatasetError(f"{dataset}: the {split} split{where} is empty" + (f": {why}" if why else "") + f"; {fix}")


def pair_files(
    dataset: str,
    images: Mapping[str, Path],
    labels: Mapping[str, Path],
    expected_label: Callable[[str], str] | None = None,
    expected_image: Callable[[str], str] | None = None,
    limit: int = 5,
) -> list[tuple[Path, Path]]:
    """Pair ``images`` with ``labels`` by key (sorted by key); any unmatched file is an error naming it."""
    missing_labels = sorted(set(images) - set(labels))
    missing_images = sorted(set(labels) - set(images))
    problems = []
    if missing_labels:
        lines = [f"  {images[k]}" + (f" (expected label {expected_label(k)})" if expected_label else "") for k in missing_labels[:limit]]
        more = f"\n  ... and {len(missing_labels) - limit} more" if len(missing_labels) > limit else ""
        problems.append(f"{len(missing_labels)} image(s) without a label:\n" + "\n".join(lines) + more)
    if missing_images:
        lines = [f"  {labels[k]}" + (f" (expected image {expected_image(k)})" if expected_image else "") for k in missing_images[:limit]]
        more = f"\n  ... and {len(missing_images) - limit} more" if len(missing_images) > limit else ""
        problems.append(f"{len(missing_images)} label(s) without an image:\n" + "\n".join(lines) + more)
    if problems:
        raise DatasetError(f"{dataset}: " + "\n".join(problems))
    return [(images[k], labels[k]) for k in sorted(images)]
