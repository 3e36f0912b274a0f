"""Stopping on a signal sent to the whole process group (batch schedulers, timeout, systemd):
the run saves last.pt and exits with the signal's status, also with loader workers, during
validation and with several torchrun ranks."""

import os
import signal
import subprocess
import sys

import pytest
import torch

from conftest import REPO, TINY_OVERRIDES
from recallseg.checkpoints.format import load_checkpoint

RUN = [o for o in TINY_OVERRIDES if not o.startswith(("trainer.max_iters", "trainer.val_interval", "trainer.num_workers"))]

# A synthetic dataset that signals its own process group while the first validation loads
# sample 1 (in a loader worker when evaluation.num_workers > 0), once per marker file.
SIGNALLING_DATASET = '''
import os, signal
from recallseg.data import SyntheticStreets

class SignalDuringValidation(SyntheticStreets):
    def load(self, index):
        mark = os.environ["SIGNAL_MARK"]
        if self.split == "val" and index == 1 and not os.path.exists(mark):
            open(mark, "w").close()
            os.killpg(os.getpgid(0), signal.SIGTERM)
        return super().load(index)
'''


def start(command, env=None):
    """``command`` in a new session (its own process group), like a batch job's."""
    return subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **(env or {})},
    )  # fmt: skip


def signal_group_after(proc, marker, sig=signal.SIGTERM, timeout=300):
    """Send ``sig`` to the process group once a line contains ``marker``; ``(exit status, output)``."""
    output = []
    for line in proc.stdout:
        output.append(line)
        if marker in line:
            os.killpg(proc.pid, sig)
            break
    output.extend(proc.stdout)
    return proc.wait(timeout=timeout), "".join(output)


def train(run_dir, *overrides, env=None):
    return start([sys.executable, str(REPO / "train.py"), *RUN, *overrides, f"hydra.run.dir={run_dir}"], env)


@pytest.mark.slow
def test_sigterm_to_the_process_group_with_loader_workers_saves_last_pt(tmp_path):
    proc = train(tmp_path / "run", "trainer.max_iters=60", "trainer.val_interval=100", "trainer.num_workers=1", "loss=ce")
    code, out = signal_group_after(proc, "iter 2/")
    assert code == 143, out[-3000:]
    assert "killed by signal" not in out
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert 2 <= state["iteration"] < 60
    assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())


@pytest.mark.slow
def test_sigint_to_the_process_group_exits_130(tmp_path):
    proc = train(tmp_path / "run", "trainer.max_iters=60", "trainer.val_interval=100", "trainer.num_workers=1", "loss=ce")
    code, out = signal_group_after(proc, "iter 1/", signal.SIGINT)
    assert code == 130, out[-3000:]
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["iteration"] >= 1


@pytest.fixture
def signalling_dataset(tmp_path):
    (tmp_path / "signalling_dataset.py").write_text(SIGNALLING_DATASET)
    return {"PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO}", "SIGNAL_MARK": str(tmp_path / "signalled")}


@pytest.mark.slow
def test_a_signal_during_validation_saves_and_the_resumed_run_repeats_it(tmp_path, signalling_dataset):
    """The first validation is abandoned, last.pt keeps the place (marked: validation pending),
    and the resumed run validates first and ends bit for bit where a straight run ends."""
    common = [
        "trainer.max_iters=3", "trainer.val_interval=2", "trainer.num_workers=1", "evaluation.num_workers=1", "evaluation.batch_size=1",
        "loss=ce", "dataset._target_=signalling_dataset.SignalDuringValidation",
    ]
    code, out = signal_group_after(train(tmp_path / "split", *common, env=signalling_dataset), "never printed")
    assert code == 143, out[-3000:]
    assert "killed by signal" not in out
    state = load_checkpoint(tmp_path / "split" / "checkpoints" / "last.pt")
    assert state["iteration"] == 2 and state["validation_pending"] is True
    assert not (tmp_path / "split" / "checkpoints" / "best.pt").exists()
    for run_dir, extra in ((tmp_path / "split", ["resume=auto"]), (tmp_path / "straight", [])):
        code, out = signal_group_after(train(run_dir, *common, *extra, env=signalling_dataset), "never printed")
        assert code == 0, out[-3000:]
    split, straight = (load_checkpoint(tmp_path / d / "checkpoints" / "last.pt") for d in ("split", "straight"))
    assert split["iteration"] == straight["iteration"] == 3
    for key in straight["model"]:
        assert torch.equal(split["model"][key], straight["model"][key]), key
    best_split, best_straight = (load_checkpoint(tmp_path / d / "checkpoints" / "best.pt") for d in ("split", "straight"))
    assert best_split["iteration"] == best_straight["iteration"] and best_split["best_score"] == best_straight["best_score"]


@pytest.mark.slow
def test_sigterm_to_a_torchrun_process_group_stops_both_ranks_after_the_same_step(tmp_path):
    """Both gloo ranks (and their loader workers) get SIGTERM; they agree to stop within a step,
    not at the next log interval (50 here), rank 0 saves while rank 1 waits, and last.pt is on
    disk long before torchrun's 30 s grace period ends."""
    import time

    run_dir = tmp_path / "run"
    proc = start(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29541", str(REPO / "train.py"), *RUN,
         "trainer.max_iters=200", "trainer.val_interval=1000", "trainer.log_interval=50", "trainer.num_workers=1", "loss=ce",
         f"hydra.run.dir={run_dir}"],
    )  # fmt: skip
    output = []
    for line in proc.stdout:
        output.append(line)
        if "training /" in line:  # rank 0's "device ..., N training / M validation images" line
            break
    time.sleep(4)  # a few steps
    os.killpg(proc.pid, signal.SIGTERM)
    signalled = time.monotonic()
    output.extend(proc.stdout)
    code = proc.wait(timeout=120)
    out = "".join(output)
    assert time.monotonic() - signalled < 25, out[-4000:]
    assert code == 1, out[-4000:]  # torchrun's own status after a signal; the ranks exit with 143
    state = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert 1 <= state["iteration"] < 50, out[-4000:]
    assert len(state["rng_per_rank"]) == 2
    assert "stopped at iteration %d" % state["iteration"] in out
    assert "killed by signal" not in out and "SIGKILL" not in out


@pytest.mark.slow
def test_a_process_exits_with_a_loader_it_never_shut_down():
    """Workers ignore SIGTERM, the signal multiprocessing stops them with at exit: a loader left
    running (referenced by an error's traceback, say) must not keep the process from exiting."""
    code = (
        "from torch.utils.data import DataLoader\nfrom recallseg.pipeline.loaders import worker_init\n"
        "batches = iter(DataLoader(list(range(8)), num_workers=1, worker_init_fn=worker_init, persistent_workers=True))\n"
        "next(batches)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60)
    assert result.returncode == 0
