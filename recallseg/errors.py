"""The error types users see, and which conditions are the user's situation rather than a bug.

Every command prints a ``UserError`` as one line, ``error: <what>: <why>; <what to do>``, with
the further lines of a message that has several indented below it, and exits with status 2;
anything else is a bug and keeps its traceback. Some conditions that are
not ``UserError``s are the user's situation all the same: an OS error about a file the OS names
or about a disk that is full or read-only, and running out of memory. ``as_user_error`` maps
them, once, for every command and for a training run's single way out.
"""

from __future__ import annotations

import difflib
import errno
import re
import sys
from typing import Iterable


class UserError(Exception):
    """A problem in the user's input (config, file, checkpoint, data); the message says what to do."""


class ConfigError(UserError, ValueError):
    """A config key with a bad value: ``ConfigError("trainer.batch_size", "must be positive, got 0", "set ...")``."""

    def __init__(self, key: str, problem: str, fix: str = ""):
        self.key, self.problem, self.fix = key, problem, fix
        super().__init__(f"{key}: {problem}" + (f"; {fix}" if fix else ""))


class NonFiniteError(UserError, FloatingPointError):
    """Training produced a NaN or infinity (a loss, a weight): the settings or the data are at fault."""


class DatasetError(UserError, ValueError):
    """A dataset on disk is not what recallseg expects; the message says which file and why."""


class OutputError(UserError, OSError):
    """An output file could not be written (full disk, read-only, a file where a folder should be).

    Still an ``OSError`` with the failed write's ``errno``, so a caller can tell a full disk from
    the rest; ``filename`` is the output the user asked for, never its temporary."""

    def __init__(self, message: str, errno: int | None = None, filename: str | None = None):
        super().__init__(message)
        self.errno, self.filename = errno, filename

    def __str__(self) -> str:
        return str(self.args[0])


class ResourceError(UserError):
    """The machine ran short of something the user controls: disk space, write permission, memory."""


def nearest(name: str, candidates: Iterable[str]) -> str | None:
    """The candidate most like ``name`` (for "did you mean" hints), or None."""
    matches = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.5)
    return matches[0] if matches else None


def one_line(error: BaseException) -> str:
    """The user-facing line of an error, its lines joined; a DataLoader worker's error is unwrapped from its traceback."""
    return " ".join(message_text(error).split())


def error_report(error: BaseException) -> str:
    """What a command prints: ``error: <first line>``, and below it, indented, the lines of a message
    that explains itself over several (a dataset's expected layout, an example classes file)."""
    first, explanation = message_lines(error)
    return "\n".join([f"error: {first}", *(f"  {line}" for line in explanation)])


def message_lines(error: BaseException) -> tuple[str, list[str]]:
    """The first line of an error's message (its spaces collapsed) and the lines that explain it (blank ones left out)."""
    first, *explanation = message_text(error).strip().splitlines() or [""]
    return " ".join(first.split()), [line.rstrip() for line in explanation if line.strip()]


def message_text(error: BaseException) -> str:
    """The message of an error as its lines; a DataLoader worker's error is unwrapped from its traceback."""
    text = str(error)
    if "Original Traceback" in text:  # re-raised from a loader worker: the traceback ends with "module.Type: message"
        lines = text.strip().splitlines()
        name = type(error).__name__
        starts = [i for i, line in enumerate(lines) if re.match(rf"^(?:[\w.]+\.)?{re.escape(name)}: ", line)]
        if starts:  # the message may span lines
            text = "\n".join(lines[starts[-1]:]).split(": ", 1)[1]
        else:
            last = [line for line in lines if line.strip()][-1]
            text = last.split(": ", 1)[1] if ": " in last else last
    return text


# A disk that is full, over its quota or read-only: the user's situation even where the OS names no file.
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})

_OS_HINTS = {
    errno.ENOSPC: "free space on that disk or write elsewhere, then run again",
    errno.EDQUOT: "free space within your quota or write elsewhere, then run again",
    errno.EROFS: "make it writable or write elsewhere",
    errno.EACCES: "check its permissions or use another path",
    errno.EPERM: "check its permissions or use another path",
    errno.ENOENT: "check the path",
}


def _out_of_memory(error: BaseException) -> bool:
    if isinstance(error, MemoryError):
        return True
    torch = sys.modules.get("torch")  # only a process that imported torch can have run out of its memory
    return torch is not None and isinstance(error, getattr(torch, "OutOfMemoryError", ()))


def as_user_error(error: BaseException) -> UserError | None:
    """``error`` as the user's situation (printed as one line, exit 2), or None for a bug."""
    if isinstance(error, UserError):
        return error
    # A loader worker's OSError comes back without its errno, its traceback in the message: it read the user's files.
    from_worker = "Original Traceback" in str(error)
    if isinstance(error, OSError) and (error.filename is not None or error.errno in DISK_ERRNOS or from_worker):
        where = " -> ".join(str(name) for name in (error.filename, error.filename2) if name is not None)
        why = error.strerror or one_line(error)
        hint = _OS_HINTS.get(error.errno)
        return ResourceError(f"{where + ': ' if where else ''}{why}" + (f"; {hint}" if hint else ""))
    if _out_of_memory(error):
        # torch's message spans lines and ends with allocator advice; its first sentences say how much was missing
        said = ". ".join(one_line(error).split(". ")[:3]).rstrip(".")
        said = said if "out of memory" in said.lower() else f"out of memory{': ' + said if said else ''}"
        return ResourceError(f"{said}; lower the batch size or the image size, or use inference.mode=slide for large images")
    return None
