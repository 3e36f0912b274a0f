"""How a command ends on a user's mistake: one line, ``error: <what>: <why>; <what to do>``, exit 2
(a message that explains itself over several lines keeps them, indented below that one).

Which errors print that way is decided once, by ``errors.as_user_error``: ``UserError``s, the OS
conditions of the user's own files and disks, running out of memory. Each line also goes into
the run's ``train.log`` where there is one; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import sys
import traceback
from typing import Iterator

from recallseg.errors import UserError, as_user_error, error_report, one_line
from recallseg.runtime.versions import check_torch_pair
from recallseg.training.log import write_to_run_log

__all__ = ["Refused", "one_line", "print_error", "user_errors"]


class Refused(UserError):
    """A refusal that must leave the run directory untouched (not even train.log)."""


def print_error(line: str) -> None:
    from tqdm import tqdm

    tqdm.write(line, file=sys.stderr)  # on its own line, never on a progress bar's
    sys.stderr.flush()


@contextlib.contextmanager
def user_errors(log_to_run: bool = False) -> Iterator[None]:
    """Print the user's situation (``as_user_error``) as one line and exit 2; a bug keeps its traceback.
    Every command runs under it, so it first checks that torch and torchvision belong together."""
    from recallseg.checkpoints.resume import RunRefused
    from recallseg.training.run_directory import RunDirectoryBusy

    try:
        check_torch_pair()
        yield
    except Exception as error:
        mapped = as_user_error(error)
        if mapped is None:  # a bug: its traceback reaches the console (Hydra prints it) and train.log
            if log_to_run:
                write_to_run_log("training failed:\n" + traceback.format_exc().rstrip())
            raise
        report = error_report(mapped)
        print_error(report)
        if log_to_run and not isinstance(mapped, (Refused, RunRefused, RunDirectoryBusy)):
            write_to_run_log(report)
        raise SystemExit(2) from None
