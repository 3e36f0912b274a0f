"""A training run's directory: claimed by one run at a time, and what the run records about itself.

**The claim.** The process that writes a run (rank 0) holds an OS lock (``flock``) on
``<run dir>/.run.lock`` for as long as the run lasts. The kernel drops it when that process
ends, however it ends (SIGKILL, a node failure on a local disk), so a killed run never blocks
the next ``resume=auto``. A second run on the same directory (a double submission, a requeue
while the first job still runs) is refused in one line naming the holder's process id and host,
before it reads or writes anything there. Forked children (loader workers) close their copy of
the lock at once, so a worker outliving its parent for a moment does not keep the directory.

**The record.** Hydra's own writing is off (``hydra.output_subdir: null``): recallseg writes the
same three files of ``.hydra/`` once the config is valid and the run accepted, so a refused
invocation leaves an existing run directory exactly as it was.
"""

from __future__ import annotations

import atexit
import errno
import fcntl
import logging
import os
import socket
import tempfile
import time
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from recallseg.atomic_files import atomic_write
from recallseg.errors import UserError

LOCK_NAME = ".run.lock"
# What a filesystem without working locks (some network and FUSE mounts) answers to flock.
NO_LOCKS = frozenset({errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL})

log = logging.getLogger("recallseg")


class RunDirectoryError(UserError):
    """The run directory cannot be written."""


class RunDirectoryBusy(UserError):
    """Another live run holds the run directory; nothing in it was changed."""


def _cannot_write(directory: Path, error: OSError) -> RunDirectoryError:
    why = error.strerror or type(error).__name__
    if isinstance(error, (FileExistsError, NotADirectoryError)):
        why = "it, or a directory it would be in, is a file"
    return RunDirectoryError(
        f"cannot write to {directory} ({why}): checkpoints and logs go there; make it writable or choose another hydra.run.dir"
    )


def check_writable(directory: str | Path) -> None:
    """Create ``directory`` if needed and write (then remove) a file in it, so that a read-only
    run directory stops the run at its start instead of at its first checkpoint."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as error:
        raise _cannot_write(directory, error) from None


# The directories this process holds: claiming one again is a no-op (a second flock on a new
# descriptor of the same file would conflict with our own).
_held: dict[Path, int] = {}


def _holder(lock: Path) -> str:
    """Who holds ``lock``, as its holder wrote it; it writes just after locking, so wait a moment."""
    for _ in range(20):
        try:
            text = lock.read_text().strip()
        except OSError:
            text = ""
        if text:
            pid, _, host = text.partition(" ")
            return f"process {pid} on {host or 'an unknown host'}"
        time.sleep(0.05)
    return "another process"


def claim_run_directory(directory: str | Path) -> bool:
    """Hold ``directory`` for this process (see the module docstring); refuse it when another run holds
    it. False when this process held it already."""
    directory = Path(directory).resolve()
    if directory in _held:
        return False
    lock = directory / LOCK_NAME
    try:
        directory.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                os.close(fd)
                if error.errno in NO_LOCKS:  # the run goes on unprotected rather than not at all
                    log.warning("cannot lock %s (%s): a second run on this directory would not be refused", lock, error.strerror)
                    lock.unlink(missing_ok=True)
                    return True
                if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise
                raise RunDirectoryBusy(
                    f"{directory}: another run is using this directory ({_holder(lock)} holds {LOCK_NAME}); "
                    "wait for it to end (or stop it) and continue with resume=auto, or choose another hydra.run.dir"
                ) from None
            # A former holder removes the file as it releases it: a lock on a removed file claims nothing.
            try:
                current = os.stat(lock)
            except FileNotFoundError:
                current = None
            opened = os.fstat(fd)
            if current is not None and (current.st_dev, current.st_ino) == (opened.st_dev, opened.st_ino):
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
    except OSError as error:
        raise _cannot_write(directory, error) from None
    _held[directory] = fd
    return True


def release_run_directory(directory: str | Path) -> None:
    """End this process's claim on ``directory`` (the lock file goes with it); a no-op when not held."""
    directory = Path(directory).resolve()
    fd = _held.pop(directory, None)
    if fd is None:
        return
    try:
        (directory / LOCK_NAME).unlink(missing_ok=True)  # while still locked: see claim_run_directory
    except OSError:
        pass  # a read-only directory by now: the file stays, unlocked, and the next run reuses it
    os.close(fd)


def _release_all() -> None:
    for directory in list(_held):
        release_run_directory(directory)


def _forget_in_child() -> None:
    """A forked child never holds its parent's directories."""
    for fd in _held.values():
        try:
            os.close(fd)
        except OSError:
            pass
    _held.clear()


atexit.register(_release_all)
os.register_at_fork(after_in_child=_forget_in_child)


def record_config(run_dir: Path, cfg: DictConfig, resumed: bool = False) -> None:
    """``config.yaml`` (the resolved config), ``overrides.yaml`` and ``hydra.yaml`` (with the chosen groups).
    A resumed run writes ``config.yaml`` only: the other two say how the run was started, and the
    resume's own command line (``resume=auto``) chose none of its groups."""
    folder = run_dir / ".hydra"
    folder.mkdir(parents=True, exist_ok=True)
    files = {"config.yaml": OmegaConf.to_yaml(cfg)}
    if HydraConfig.initialized() and not resumed:
        hydra_cfg = HydraConfig.get()
        files["overrides.yaml"] = OmegaConf.to_yaml(OmegaConf.create(list(hydra_cfg.overrides.task)))
        files["hydra.yaml"] = OmegaConf.to_yaml({"hydra": {"runtime": {"choices": OmegaConf.to_container(hydra_cfg.runtime.choices)}}})
    for name, text in files.items():
        with atomic_write(folder / name) as handle:
            handle.write(text)
