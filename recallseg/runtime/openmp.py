"""``trainer.omp_passive=true``: CPU threads that sleep between parallel regions (``OMP_WAIT_POLICY=PASSIVE``).

PyTorch's CPU kernels run on an OpenMP thread pool whose threads, by default, keep spinning on
their core for a while after each region, waiting for the next. On a machine shared with other
busy processes they take the cores those processes need, and training runs several times slower;
PASSIVE makes them sleep instead, at a small cost on an idle machine (docs/performance.md).

The OpenMP runtime reads the variable once, when it is loaded, i.e. when torch is imported, and
every command imports torch before it reads its config: setting it later changes nothing. So a
command that finds the option on restarts itself with the variable set (``os.execv``: the same
process id and arguments); exporting ``OMP_WAIT_POLICY`` yourself saves the restart. A value
already in the environment is left as it is.
"""

from __future__ import annotations

import os
import sys

VARIABLE = "OMP_WAIT_POLICY"


def restart_with_passive_wait(requested: bool) -> None:
    """Run this process with ``OMP_WAIT_POLICY=PASSIVE`` when ``requested`` and the variable is unset:
    set it, and restart the process when torch (and so OpenMP) is loaded already."""
    if not requested or VARIABLE in os.environ:
        return
    os.environ[VARIABLE] = "PASSIVE"
    if "torch" in sys.modules:
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])


def passive_wait_note(requested: bool) -> str | None:
    """Why this process's OpenMP threads do not wait passively although ``requested`` (None when they do)."""
    value = os.environ.get(VARIABLE)
    if not requested or (value or "").upper() == "PASSIVE":
        return None
    if value is not None:
        return f"trainer.omp_passive=true, but {VARIABLE}={value} was exported and applies"
    return f"trainer.omp_passive=true came too late for this process (set in a sweep's config file?): export {VARIABLE}=PASSIVE"
