"""How a command ends on a user's mistake: one line, ``error: <what>: <why>; <what to do>``, exit 2.

Only ``UserError``s and the OS conditions of the user's own files print that way (also into the
run's ``train.log`` where there is one); anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import re
import sys
import traceback
from typing import Iterator

from recallseg.errors import UserError
from recallseg.runtime.versions import check_torch_pair
from recallseg.training.log import write_to_run_log


class Refused(UserError):
    """A refusal that must leave the run directory untouched (not even train.log)."""


def one_line(error: BaseException) -> str:
    """The user-facing line of an error; a DataLoader worker's error is unwrapped from its traceback."""
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
    return " ".join(text.split())


@contextlib.contextmanager
def user_errors(log_to_run: bool = False) -> Iterator[None]:
    """Print a UserError, or an OS error about a file the OS names (missing, unreadable, not writable),
    as one line; exit 2. Everything else is a bug and keeps its traceback. Every command runs under
    it, so it first checks that torch and torchvision belong together."""
    from recallseg.checkpoints.resume import RunRefused

    try:
        check_torch_pair()
        yield
    except (UserError, OSError) as error:
        if not isinstance(error, UserError) and getattr(error, "filename", None) is None:
            raise  # an OS error that names no file is not about the user's files: a bug, with its traceback
        line = f"error: {one_line(error)}"
        from tqdm import tqdm

        tqdm.write(line, file=sys.stderr)  # on its own line, never on a progress bar's
        sys.stderr.flush()
        if log_to_run and not isinstance(error, (Refused, RunRefused)):
            write_to_run_log(line)
        raise SystemExit(2) from None
    except Exception:  # a bug: its traceback reaches the console (Hydra prints it) and train.log
        if log_to_run:
            write_to_run_log("training failed:\n" + traceback.format_exc().rstrip())
        raise
