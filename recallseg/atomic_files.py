"""Output files: written whole or not at all, and never over what a command reads.

Every file recallseg writes goes through ``atomic_write`` (a handle) or ``atomic_path`` (a file
name, for writers that want one, such as the ONNX exporter): the data is written to a temporary
file next to the target, flushed to disk, and renamed over the target. A reader (or a crash)
never sees half a file. On an error the temporary file is removed, the previous file stays as it
was, and the error is an ``OutputError`` naming the target and why (full disk, read-only, a file
where a folder should be): one line for the user, with the failed write's ``errno``.

``check_output_location`` is what a command runs on each of its output locations before any
work: it refuses a location that is, lies inside or holds what the command reads (a dataset, an
input folder, the checkpoint), a file where a folder is needed, and a place no file can be
created in.

A kill (SIGKILL, power loss) can leave the temporary file behind. Its name carries the
writer's process id and host, ``.last.pt.tmp-4242@node7``, so ranks writing the same file
never share one, and ``remove_orphaned_temporaries`` removes only those whose writer is gone:
a second invocation on a directory another process is still writing to leaves that one's alone.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import socket
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterable, Iterator

from recallseg.errors import ConfigError, OutputError

log = logging.getLogger("recallseg")

# .NAME.tmp-PID@HOST (and .NAME.tmp-PID, as earlier versions named them)
TEMPORARY_NAME = re.compile(r"^\.(?P<name>.+)\.tmp-(?P<pid>\d+)(?:@(?P<host>.+))?$")

WHY = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is used up",
    errno.EFBIG: "the file is larger than this process may write (ulimit -f)",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "no permission to write there",
    errno.EPERM: "no permission to write there",
}


def _host() -> str:
    return socket.gethostname().replace("/", "_") or "localhost"


def temporary_path(path: Path) -> Path:
    """The temporary file this process writes ``path`` through."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}@{_host()}")


def human_size(size: float) -> str:
    """``1.5 GB``, ``340.2 MB``, ``12.0 KB``, ``800 bytes``: a small amount never reads as 0.0 GB."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if round(size / scale, 1) >= 1.0:
            return f"{size / scale:.1f} {unit}"
    return f"{int(size)} bytes"


def _file_in_the_way(folder: Path) -> Path | None:
    """The nearest existing part of ``folder`` when it is a file (no folder can be made under it)."""
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    return existing if existing is not None and not existing.is_dir() else None


def output_error(path: Path, error: OSError) -> OutputError:
    """``error``, met while writing ``path``, as the one line a user reads."""
    in_the_way = _file_in_the_way(path.parent)
    if in_the_way is not None:
        why, fix = f"{in_the_way} is a file, not a folder", "remove it or choose another location"
    elif path.is_dir():
        why, fix = "it is a folder", "give a file name"
    else:
        why = WHY.get(error.errno, " ".join((error.strerror or str(error)).split()))
        fix = "free space there or choose another location" if error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) else (
            "choose a location you can write to" if error.errno in WHY else "check that disk and the path"
        )  # fmt: skip
    kept = f"the previous {path.name} is unchanged" if path.is_file() else "nothing was written"
    return OutputError(f"cannot write {path}: {why} ({kept}); {fix}", error.errno, str(path))


def _about(error: OSError, path: Path, tmp: Path) -> bool:
    """Whether ``error`` came from writing ``path`` (and not, say, from reading an input inside the block)."""
    if error.filename is None:
        return True  # write(), fsync() and close() name no file
    named = Path(os.fsdecode(error.filename))
    return named in (tmp, path) or named in path.parents


def _fsync(path: Path, directory: bool = False) -> None:
    descriptor = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


@contextmanager
def _replacing(path: str | Path, synced_by_writer: bool) -> Iterator[Path]:
    path = Path(path)
    tmp = temporary_path(path)
    try:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            yield tmp
            if not synced_by_writer:
                _fsync(tmp)
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()
        _fsync(path.parent, directory=True)  # the rename itself reaches the disk
    except OSError as error:
        if isinstance(error, OutputError) or not _about(error, path, tmp):
            raise
        raise output_error(path, error) from error


@contextmanager
def atomic_write(path: str | Path, mode: str = "w", **options) -> Iterator[IO]:
    """``with atomic_write(path) as handle: ...``; ``mode`` is ``"w"`` (text) or ``"wb"``; ``options`` go to ``open``."""
    with _replacing(path, synced_by_writer=True) as tmp:
        with open(tmp, mode, **options) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """``with atomic_path(path) as tmp: writer(tmp)``: for writers that take a file name; what
    they write at ``tmp`` replaces ``path`` when the block ends without an error."""
    with _replacing(path, synced_by_writer=False) as tmp:
        yield tmp


def _overlap(target: Path, source: Path, folder: bool) -> str | None:
    if target == source:
        return "is"
    if source in target.parents:
        return "is inside"
    if folder and target in source.parents:
        return "holds"
    return None


def check_output_location(key: str, path: str | Path, reads: Iterable[tuple[str, str | Path | None]] = (), file: bool = False) -> Path:
    """Refuse an output location before any work is done, with a ``ConfigError`` naming ``key``,
    the path and why; returns ``path``.

    ``path`` is the folder the outputs go into, or with ``file=True`` the output file. Refused: a
    location that is, lies inside or (a folder) holds one of ``reads``, the ``(key, path)`` of what
    the command reads (writing there could replace an input); a file where a folder is needed or
    a folder where a file is; a place where no file can be created (read-only, no permission).
    """
    given = Path(path).expanduser()
    target = given.resolve()
    for read_key, read_path in reads:
        if read_path is None or str(read_path) == "":
            continue
        relation = _overlap(target, Path(read_path).expanduser().resolve(), folder=not file)
        if relation is not None:
            raise ConfigError(
                key, f"{given} {relation} {read_key} {read_path}, which this command reads, so its files could be written over",
                f"choose a {'file' if file else 'folder'} outside {read_path}",
            )
    if file and target.is_dir():
        raise ConfigError(key, f"{given} is a folder, not a file", "give a file name")
    if not file and target.exists() and not target.is_dir():
        raise ConfigError(key, f"{given} is a file, not a folder", "give a folder (it is created when missing)")
    in_the_way = _file_in_the_way(target.parent if file else target)
    if in_the_way is not None:
        raise ConfigError(key, f"{given} cannot be created: {in_the_way} is a file, not a folder", "choose another location")
    existing = next(p for p in (target.parent if file else target, *target.parents) if p.exists())
    try:  # the only test that holds for ACLs, network disks and root alike
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        why = WHY.get(error.errno, " ".join((error.strerror or str(error)).split()))
        raise ConfigError(key, f"{given} cannot be written: {why} ({existing})", "choose a location you can write to") from None
    return given


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
