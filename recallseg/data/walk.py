"""One directory walk for every dataset and for predict's input folders.

The walk follows symbolically linked directories, since a city linked into
``leftImg8bit/train`` is part of the split as much as a copied one, and it enters each
directory once (by device and inode), so a link that points back up the tree cannot loop.
Hidden entries (names starting with a dot: ``.DS_Store``, macOS's ``._`` companions, editors'
swap files) are not read. Everything else it passes over is named: a dangling link, a link
loop, an unreadable directory, a file that is not of the kind asked for. A dataset collects
these over all its walks and reports them in one warning line, with their count.
"""

from __future__ import annotations

import errno
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

log = logging.getLogger("recallseg")

SHOWN = 5  # skipped entries named in the warning; the count covers the rest
# A split is listed more than once in a run (for training and for its class statistics): said once.
_REPORTED: set[str] = set()


@dataclass
class Walk:
    """The walks of one dataset split (or one input folder): ``files`` lists, ``report`` warns.

    ``what`` names the split in the warning (``Cityscapes train``); ``base`` is the directory the
    named entries are shown relative to (the dataset root).
    """

    what: str
    base: Path | None = None
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    def files(
        self, directory: str | os.PathLike, suffixes: Sequence[str] | None = None, *, recursive: bool = True,
        unused: Sequence[str] = (), kind: str = "an image",
    ) -> list[Path]:
        """Regular files under ``directory`` whose names end with one of ``suffixes`` (any file for
        None; compared case-insensitively), sorted, as paths under ``directory`` (links not resolved).

        Files ending with one of ``unused`` belong to the layout but are not read (Cityscapes'
        ``_polygons.json``) and pass silently; any other file is skipped as not ``kind``.
        """
        wanted = None if suffixes is None else tuple(s.lower() for s in suffixes)
        quiet = tuple(s.lower() for s in unused)
        root = Path(directory)
        try:
            status = os.stat(root)
        except OSError:
            return []
        visited = {(status.st_dev, status.st_ino)}
        found: list[Path] = []
        pending = [root]
        while pending:
            current = pending.pop()
            try:
                with os.scandir(current) as listing:
                    entries = sorted(listing, key=lambda entry: entry.name)
            except OSError as error:
                self.skipped.append((current, f"unreadable directory: {error.strerror or type(error).__name__}"))
                continue
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                path = Path(entry.path)
                try:
                    status = os.stat(entry.path)
                except OSError as error:
                    loop = error.errno == errno.ELOOP
                    why = "link loop" if loop else "dangling link" if entry.is_symlink() else error.strerror or type(error).__name__
                    self.skipped.append((path, why))
                    continue
                if entry.is_dir():
                    key = (status.st_dev, status.st_ino)
                    if not recursive:
                        self.skipped.append((path, "a directory"))
                    elif key in visited:
                        self.skipped.append((path, "link loop: a directory already walked"))
                    else:
                        visited.add(key)
                        pending.append(path)
                elif entry.is_file():
                    name = entry.name.lower()
                    if wanted is None or name.endswith(wanted):
                        found.append(path)
                    elif not (quiet and name.endswith(quiet)):
                        self.skipped.append((path, f"not {kind}"))
                else:
                    self.skipped.append((path, "not a regular file"))
        return sorted(found)

    def report(self) -> None:
        """Warn, in one line, about every entry the walks passed over (nothing when there is none)."""
        if not self.skipped:
            return
        shown = ", ".join(f"{self._name(path)} ({why})" for path, why in self.skipped[:SHOWN])
        more = f", ... and {len(self.skipped) - SHOWN} more" if len(self.skipped) > SHOWN else ""
        where = f" under {self.base}" if self.base is not None else ""
        line = f"{self.what}: skipped {len(self.skipped)} entr{'y' if len(self.skipped) == 1 else 'ies'}{where}: {shown}{more}"
        self.skipped = []
        if line not in _REPORTED:
            _REPORTED.add(line)
            log.warning("%s", line)

    def _name(self, path: Path) -> str:
        if self.base is not None:
            try:
                return path.relative_to(self.base).as_posix()
            except ValueError:
                pass
        return str(path)
