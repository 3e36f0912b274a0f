"""Atomic file writes: a reader (or a crash) never sees half a file.

The data is written to a temporary file next to the target, named after the process so that
ranks writing the same file never share one, flushed to disk, and renamed over the target.
On an error the temporary file is removed and the previous file stays as it was.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator


@contextmanager
def atomic_write(path: str | Path, mode: str = "w") -> Iterator[IO]:
    """``with atomic_write(path) as handle: ...``; ``mode`` is ``"w"`` (text) or ``"wb"``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    directory = os.open(path.parent, os.O_RDONLY)
    try:  # the rename itself reaches the disk
        os.fsync(directory)
    finally:
        os.close(directory)
