"""Shared helpers: tiny configs and the real entry points run in subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CONFIG_DIR = REPO / "configs"

# Small enough to train a few iterations in seconds on a 2-core CPU.
TINY_OVERRIDES = [
    "dataset.height=64",
    "dataset.width=64",
    "dataset.num_train=8",
    "dataset.num_val=4",
    "trainer.max_iters=2",
    "trainer.batch_size=2",
    "trainer.val_interval=2",
    "trainer.log_interval=1",
    "trainer.num_workers=0",
    "trainer.device=cpu",
    "trainer.amp=off",
    "model.encoder_weights=null",
]


def run_entry_point(script: str, *args: str, cwd: Path = REPO, check: bool = True, env: dict | None = None, timeout: int = 300):
    """Run ``python <script> args`` like a user would; returns the CompletedProcess."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    result = subprocess.run(
        [sys.executable, str(REPO / script), *args], cwd=cwd, capture_output=True, text=True, env=full_env, timeout=timeout
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{script} {' '.join(args)} failed with {result.returncode}:\n{result.stdout[-4000:]}\n{result.stderr[-6000:]}")
    return result


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


@pytest.fixture
def cache_env(tmp_path):
    """Keep class-statistics caches of a test inside its tmp dir."""
    return {"RECALLSEG_CACHE": str(tmp_path / "cache")}
