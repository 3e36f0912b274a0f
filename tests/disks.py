"""Disks that fail: writes that stop partway, full disks and read-only ones, for the tests of
what a command leaves behind when it cannot write.

``writes_fail_beyond`` works in any process: the kernel refuses every write past ``limit``
bytes of a file (EFBIG, as a full disk refuses with ENOSPC), whatever library writes it.
``small_disk`` mounts a real tmpfs of a given size (read-only on request); it needs root and
skips the test elsewhere.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
from pathlib import Path

import pytest


@contextlib.contextmanager
def writes_fail_beyond(limit: int):
    """Within the block, writing past byte ``limit`` of any file fails with EFBIG (RLIMIT_FSIZE)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the default action would kill the test process
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


@contextlib.contextmanager
def small_disk(where: Path, size: str = "1m", read_only: bool = False):
    """A tmpfs of ``size`` mounted at ``where`` for the block; skips the test where mounting is not allowed."""
    where.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True).returncode:
        pytest.skip("mounting a tmpfs needs root")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(disk: Path) -> None:
    """Write a file that takes every free byte of ``disk``."""
    descriptor = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(descriptor, b"\0" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(descriptor)


def leftovers(folder: Path) -> list[str]:
    """Temporaries and empty files under ``folder``: what an interrupted write must never leave."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and (".tmp-" in p.name or p.stat().st_size == 0))
