"""How a training run ends early: one way out, whatever ended it.

A signal, ``trainer.stop_after``, a bad file met by the loader or by validation, a non-finite
loss, a full disk, running out of memory or a bug: each comes here once the run has started.
Rank 0 keeps the run's place in ``last.pt`` when the run moved since its last save, the weights
are finite and the disk takes it; an end during a validation saves the random states from
before it with the validation pending, so a resumed run repeats it first (the checkpoint the
validation would otherwise have prevented). Then the run says in one line what happened:

- a signal: a log line, and the exit status 128 + its number (``Interrupted``);
- ``trainer.stop_after``: a log line, status 0;
- the user's situation (``errors.as_user_error``): ``RunStopped``, one line naming the cause
  and what became of ``last.pt`` (a message that explains itself keeps its lines below), status 2;
- a bug: a log line saying what became of ``last.pt``, then its own traceback, status 1.

Each way out that keeps the place names the command that continues the run
(``continue_command``): this program with ``resume=auto`` and the run directory, nothing else,
since a resumed run takes its config from its checkpoint (``checkpoints.resume_config``).

With several ranks a stop is agreed by every rank (``runtime.signals``) and all take part in
the save. An error is one rank's own: rank 0 saves what it holds (the weights are the same on
every rank) without waiting for the others, which torchrun stops when a rank exits.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import sys
from pathlib import Path
from typing import NoReturn

import torch

from recallseg.checkpoints.format import first_nonfinite
from recallseg.errors import UserError, as_user_error, message_lines, one_line
from recallseg.runtime.random_state import gather_rng_states, rng_state
from recallseg.runtime.signals import Interrupted, StopSignal

log = logging.getLogger("recallseg")


def continue_command(run_dir: str | Path) -> str:
    """The command line that continues the run in ``run_dir``, quoted for a POSIX shell: the program
    as it was started (``python train.py``, ``recallseg-train``, ``python -m ...``, under torchrun
    with as many processes), ``resume=auto`` and the absolute run directory."""
    script = sys.argv[0] if sys.argv and sys.argv[0] else ""
    if Path(script).parts[-3:] == ("recallseg", "commands", "train.py"):
        program = ["-m", "recallseg.commands.train"]
    elif script.endswith(".py"):
        program = [script]
    else:  # the installed command (or a launcher that hides the script)
        program = ["recallseg-train"]
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    if world > 1:  # torchrun starts a script or a module; on several nodes its rendezvous options are the user's own
        words = ["torchrun", *([f"--nnodes={world // local}"] if world > local else []), f"--nproc_per_node={local}"]
        words += ["-m", "recallseg.commands.train"] if program == ["recallseg-train"] else program
    else:
        words = program if program == ["recallseg-train"] else ["python", *program]
    return shlex.join([*words, "resume=auto", f"hydra.run.dir={_hydra_value(os.path.abspath(run_dir))}"])


def _hydra_value(text: str) -> str:
    """``text`` as a value Hydra's override parser reads back unchanged (quoted unless plain)."""
    if re.fullmatch(r"[\w./:@+-]+", text):
        return text
    # Inside Hydra's quotes a backslash is literal except in front of a quote (or of the closing quote).
    escaped = re.sub(r'(\\*)"', lambda m: m.group(1) * 2 + '\\"', text)
    return '"' + re.sub(r"(\\+)$", lambda m: m.group(1) * 2, escaped) + '"'


class RunStopped(UserError):
    """A run ended by the user's situation (a bad file, a full disk, a NaN): the cause, and what became of ``last.pt``."""


class RunEnd:
    """``Trainer``'s way out; it needs the trainer's place (``iteration``, ``_started_at``, ``_saved_at``,
    ``_validating``, ``_validation_rng``), ``runtime``, ``window``, ``writer`` and ``_save``."""

    def _keep_place(self, stop: StopSignal, abandoned_validation: bool) -> None:
        """After an agreed stop (a signal or ``trainer.stop_after``): save ``last.pt`` (unless it holds this
        iteration already) on rank 0 while the other ranks wait, then exit with the signal's status if a
        signal caused the stop."""
        runtime = self.runtime
        try:
            if self.window.steps:
                self._end_log_window()
        except Exception as error:  # nonfinite=stop on the steps since the last log
            self._end_on_error(error)
        state = self._validation_rng if abandoned_validation else rng_state()
        rng_per_rank = gather_rng_states(state, runtime.distributed, runtime.world_size)
        if runtime.is_main:
            if abandoned_validation or self._saved_at != self.iteration:
                self._save("last.pt", rng_per_rank, validation_pending=abandoned_validation)
            self.writer.close()
            log.info("stopped at iteration %d; continue with: %s", self.iteration, continue_command(self.output_dir))
        if runtime.distributed:  # no rank exits (and makes torchrun kill the others) before last.pt is written
            torch.distributed.barrier()
        if stop.received is not None:
            raise Interrupted(stop.exit_code)

    def _end_on_error(self, error: BaseException) -> NoReturn:
        """After an error: keep the place on rank 0 if it can, then end in one line (the user's
        situation) or with the error's traceback (a bug)."""
        kept = None
        if self.runtime.is_main:
            kept = self._save_place_after_error()
            try:
                self.writer.close()
            except Exception:  # a full disk: the events written so far stay
                pass
        cause = as_user_error(error)
        if cause is None:
            if kept:
                log.error("%s; the error below ended the run", kept)
            raise error
        # What became of last.pt joins the first line; a message that explains itself below keeps its lines.
        first, explanation = message_lines(cause)
        raise RunStopped("\n".join([first + (f"; {kept}" if kept else ""), *explanation])) from error

    def _save_place_after_error(self) -> str:
        """Save ``last.pt`` where that keeps something; says what became of it."""
        n, pending = self.iteration, self._validating
        during = " during validation" if pending else ""
        again = f"once that is fixed, continue with: {continue_command(self.output_dir)}"
        if n == self._saved_at:
            return f"stopped at iteration {n}{during}, which last.pt holds: {again}"
        if n == self._started_at:
            return f"stopped at iteration {n}{during}, where this run started: nothing new to save"
        previous = f"the previous last.pt (iteration {self._saved_at}) is kept" if self._saved_at >= 0 else "there is no last.pt yet"
        key = first_nonfinite(self.model.state_dict())
        if key is not None:
            return f"stopped at iteration {n}, last.pt not saved (model tensor {key!r} is not finite); {previous}"
        try:
            # This rank's random states only: the other ranks are not here to gather theirs.
            self._save("last.pt", [self._validation_rng if pending else rng_state()], validation_pending=pending)
        except Exception as failed:  # a full disk, an unwritable directory
            cause = as_user_error(failed)
            if cause is None:
                log.exception("saving last.pt at iteration %d failed", n)
            return f"stopped at iteration {n}, last.pt not saved ({one_line(cause or failed)}); {previous}"
        saved = "last.pt saved with that validation pending" if pending else "last.pt saved"
        return f"stopped at iteration {n}{during}, {saved}: {again}"
