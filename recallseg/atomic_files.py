"""Atomic file writes: a reader (or a crash) never sees half a file.

The data is written to a temporary file next to the target, flushed to disk, and renamed over
the target. On an error the temporary file is removed and the previous file stays as it was.

A kill (SIGKILL, power loss) can leave the temporary file behind. Its name carries the
writer's process id and host, ``.last.pt.tmp-4242@node7``, so ranks writing the same file
never share one, and ``remove_orphaned_temporaries`` removes only those whose writer is gone:
a second invocation on a directory another process is still writing to leaves that one's alone.
"""

from __future__ import annotations

import logging
import os
import re
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

log = logging.getLogger("recallseg")

# .NAME.tmp-PID@HOST (and .NAME.tmp-PID, as earlier versions named them)
TEMPORARY_NAME = re.compile(r"^\.(?P<name>.+)\.tmp-(?P<pid>\d+)(?:@(?P<host>.+))?$")


def _host() -> str:
    return socket.gethostname().replace("/", "_") or "localhost"


def temporary_path(path: Path) -> Path:
    """The temporary file this process writes ``path`` through."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}@{_host()}")


@contextmanager
def atomic_write(path: str | Path, mode: str = "w") -> Iterator[IO]:
    """``with atomic_write(path) as handle: ...``; ``mode`` is ``"w"`` (text) or ``"wb"``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
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


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # this process writes nothing while it cleans up: a file of a former process with our id
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_orphaned_temporaries(*directories: str | Path) -> list[Path]:
    """Remove the temporary files of atomic writes whose writer is gone (from this host; files of
    other hosts cannot be judged and stay). Only files named like ``temporary_path``'s; not recursive."""
    removed, host = [], _host()
    for directory in map(Path, directories):
        if not directory.is_dir():
            continue
        for path in directory.iterdir():
            match = TEMPORARY_NAME.match(path.name)
            if not match or not path.is_file() or (match["host"] or host) != host or _alive(int(match["pid"])):
                continue
            try:
                path.unlink()
            except FileNotFoundError:  # its writer finished after all
                continue
            removed.append(path)
            log.info("removed %s, left behind by a writer that was killed while writing %s", path, match["name"])
    return removed
