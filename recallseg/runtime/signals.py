"""Stopping on SIGTERM/SIGINT without losing the run, alone or with several ranks.

Batch schedulers, ``timeout`` and systemd signal the whole process group: the training
process and its DataLoader workers alike. The workers ignore both signals
(``pipeline.loaders.worker_init``), so they keep serving batches; the training process only
remembers the signal (:class:`StopSignal`) and the loop asks :class:`StopAgreement` after every
step and every validation batch whether to stop. A stop during validation abandons it
(:class:`StopRequested`); the loop then saves ``last.pt`` and exits with 128 + the signal's
number (:class:`Interrupted`).

With several ranks every rank must stop after the same step (or at the same validation batch)
and take part in the save. Each poll starts a non-blocking MAX all-reduce of this rank's
signal over a CPU (gloo) group and reads the one started at the previous poll: every rank reads
the same values at the same poll, so all agree at most one poll after the first signal. The
flag is a CPU tensor, so there is no device synchronisation; a rank only waits for the other
ranks to have *started* the previous poll's reduction.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from typing import Iterable, Iterator

import torch
import torch.distributed as dist

log = logging.getLogger("recallseg")

EXIT_CODES = {signal.SIGTERM: 143, signal.SIGINT: 130}


class Interrupted(SystemExit):
    """Raised after a signal once ``last.pt`` is saved; the status is 128 + the signal number."""


class StopRequested(Exception):
    """A stop was agreed during validation: every rank abandons it at the same batch."""


class StopSignal:
    """Remembers SIGTERM/SIGINT instead of dying mid-step; a second SIGINT stops at once.

    Forked DataLoader workers inherit the handler until their ``worker_init`` ignores the
    signals; in them it does nothing (the owning process's flag is what counts)."""

    def __init__(self):
        self.received: int | None = None
        self._previous = {}
        self._owner = os.getpid()

    def __enter__(self) -> "StopSignal":
        for sig in EXIT_CODES:
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum, frame) -> None:
        if os.getpid() != self._owner:  # a freshly forked loader worker
            return
        if self.received is not None:
            if signum == signal.SIGINT:  # a second Ctrl-C: stop right now
                raise KeyboardInterrupt
            return
        self.received = signum
        log.warning("received %s: stopping after the current step (or validation batch), then saving last.pt", signal.Signals(signum).name)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.received, 128 + int(self.received or 0))

    def __exit__(self, *exc) -> bool:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False


class StopAgreement:
    """``poll()``: whether every rank stops now (see the module docstring). ``close()`` waits for the
    reduction still in flight; every rank must poll equally often and close at the same point."""

    def __init__(self, stop: StopSignal, distributed: bool):
        self.stop = stop
        self.group = dist.new_group(backend="gloo") if distributed else None  # CPU flags, whatever the device
        self._pending: tuple[dist.Work, torch.Tensor] | None = None

    def poll(self) -> bool:
        if self.group is None:
            return self.stop.received is not None
        agreed = 0
        if self._pending is not None:
            work, flag = self._pending
            work.wait()
            agreed = int(flag.item())
            self._pending = None
        if agreed:  # every rank read the same value: nobody starts another reduction
            if self.stop.received is None:
                self.stop.received = agreed
            return True
        flag = torch.tensor([self.stop.received or 0], dtype=torch.int32)
        self._pending = (dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self.group, async_op=True), flag)
        return False

    def close(self) -> None:
        if self._pending is not None:
            self._pending[0].wait()
            self._pending = None


class Interruptible:
    """A loader whose iteration polls ``agreement`` before each batch and raises :class:`StopRequested`
    when a stop is agreed. ``polls`` (at least ``len(loader)``) equalises the number of polls
    across ranks whose shards have different numbers of batches."""

    def __init__(self, loader: Iterable, agreement: StopAgreement, polls: int | None = None):
        self.loader, self.agreement = loader, agreement
        self.polls = max(polls or 0, len(loader))

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator:
        done = 0
        for batch in self.loader:
            if self.agreement.poll():
                raise StopRequested
            done += 1
            yield batch
        for _ in range(self.polls - done):
            if self.agreement.poll():
                raise StopRequested


# What a signal to a sweep's parent becomes for the sweep: a closed terminal (SIGHUP) no longer
# reaches a sweep in its own session, and stops it as SIGTERM does, each run saving last.pt.
RELAYED = {signal.SIGTERM: signal.SIGTERM, signal.SIGINT: signal.SIGINT, signal.SIGHUP: signal.SIGTERM}


def run_as_group(command: list[str], grace: float = 25.0) -> tuple[int, int | None]:
    """Run ``command`` in a process group of its own and pass SIGTERM/SIGINT/SIGHUP on to the whole group.

    A sweep's runs are grandchildren (Hydra's joblib workers): a signal sent to this process alone
    (``kill <pid>``) would leave them training. Here every process of the sweep gets it, so each
    run saves its ``last.pt``; after the command ends, this waits up to ``grace`` seconds for
    the group's last processes (less than a scheduler's 30 s before SIGKILL). Returns the
    command's exit status and the signal received (None if none).
    """
    received: list[int] = []
    process: subprocess.Popen | None = None

    def forward(signum, frame) -> None:
        received.append(signum)
        if process is not None:
            _signal_group(process.pid, RELAYED[signum])

    # Installed before the start: a signal meanwhile must not end this process alone, leaving the sweep running.
    previous = {sig: signal.signal(sig, forward) for sig in RELAYED}
    try:
        process = subprocess.Popen(command, start_new_session=True)
        if received:  # came while it started
            _signal_group(process.pid, RELAYED[received[0]])
        status = process.wait()
        deadline = time.monotonic() + grace
        while received and time.monotonic() < deadline and _group_alive(process.pid):
            time.sleep(0.1)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return status, (received[0] if received else None)


def _signal_group(group: int, signum: int) -> None:
    try:
        os.killpg(group, signum)
    except ProcessLookupError:  # the group is gone already
        pass


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a member that changed user: still there
        return True
    return True
