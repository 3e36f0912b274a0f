"""The one error type for mistakes a user can fix.

Every command prints a ``UserError`` as one line, ``error: <what>: <why>; <what to do>``, and
exits with status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
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


def nearest(name: str, candidates: Iterable[str]) -> str | None:
    """The candidate most like ``name`` (for "did you mean" hints), or None."""
    matches = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.5)
    return matches[0] if matches else None
