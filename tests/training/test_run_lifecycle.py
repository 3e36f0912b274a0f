"""A run's lifecycle: one run per directory.

A run claims its directory with an OS lock that dies with it: a second run there is refused in
one line naming the holder, and a killed run's claim is gone. In-process here; the runs of real
processes are marked slow.
"""

import os
import signal
import socket
import subprocess
import sys

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from conftest import CONFIG_DIR, REPO, TINY_OVERRIDES, read_json
from recallseg.checkpoints.format import load_checkpoint
from recallseg.commands.user_errors import user_errors
from recallseg.config.schema import validate_train_config
from recallseg.training.run_directory import LOCK_NAME, RunDirectoryBusy, claim_run_directory, release_run_directory
from recallseg.training.trainer import Trainer

# A small network: what is tested is how a run ends, not what it learns.
RUN = [
    *[o for o in TINY_OVERRIDES if not o.startswith(("trainer.max_iters", "trainer.val_interval", "dataset.num_val"))],
    "dataset.num_val=2", "loss=ce", "model.arch=Unet", "+model.encoder_depth=3", "+model.decoder_channels=[32,16,8]",
]  # fmt: skip


def trainer(run_dir, *overrides):
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[*RUN, f"output_dir={run_dir}", *overrides])
    return Trainer(OmegaConf.create(validate_train_config(cfg)))


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small convolutions: threads only contend on a shared machine
    yield
    torch.set_num_threads(threads)


def ending(run, capsys):
    """``(exit status, the last line on stderr)`` of ``run.fit()`` ended as train.py ends it."""
    with pytest.raises(SystemExit) as ended:
        with user_errors():
            run.fit()
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    return ended.value.code, lines[-1] if lines else ""


def last(run_dir):
    path = run_dir / "checkpoints" / "last.pt"
    return load_checkpoint(path) if path.exists() else None


# -- one run per directory --------------------------------------------------------------------

HOLD = """
import os, sys, time
from recallseg.training.run_directory import claim_run_directory
claim_run_directory(sys.argv[1])
if len(sys.argv) > 2 and os.fork() == 0:  # a child that outlives its parent for a while, as a loader worker can
    time.sleep(60)
    os._exit(0)
print(os.getpid(), flush=True)
time.sleep(60)
"""


@pytest.fixture
def holder(tmp_path):
    """Start a process holding ``run_dir`` (``forks=True``: with a forked child); yields its Popen."""
    started = []

    def start(run_dir, forks=False):
        proc = subprocess.Popen(
            [sys.executable, "-c", HOLD, str(run_dir), *(["fork"] if forks else [])], stdout=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONPATH": str(REPO)}, start_new_session=True,
        )  # fmt: skip
        started.append(proc)
        assert int(proc.stdout.readline()) == proc.pid
        return proc

    yield start
    for proc in started:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def test_a_second_run_on_a_held_directory_is_refused_before_it_writes_anything(tmp_path, holder, monkeypatch, capsys):
    from recallseg.commands.train import train_main

    run_dir = tmp_path / "run"
    proc = holder(run_dir)
    before = sorted(p.name for p in run_dir.rglob("*"))
    monkeypatch.setattr(sys, "argv", ["train.py", *RUN, "resume=auto", f"hydra.run.dir={run_dir}"])
    with pytest.raises(SystemExit) as ended:
        train_main()
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert ended.value.code == 2
    assert line == (
        f"error: {run_dir}: another run is using this directory (process {proc.pid} on {socket.gethostname()} holds {LOCK_NAME}); "
        "wait for it to end (or stop it) and continue with resume=auto, or choose another hydra.run.dir"
    )
    assert sorted(p.name for p in run_dir.rglob("*")) == before  # no train.log, no .hydra


def test_the_claim_of_a_killed_run_is_gone_also_while_its_loader_workers_linger(tmp_path, holder):
    for forks in (False, True):
        run_dir = tmp_path / f"run_forks_{forks}"
        proc = holder(run_dir, forks=forks)
        with pytest.raises(RunDirectoryBusy):
            claim_run_directory(run_dir)
        proc.kill()
        proc.wait()
        claim_run_directory(run_dir)  # the next resume=auto may continue at once
        release_run_directory(run_dir)
        assert not (run_dir / LOCK_NAME).exists()  # a released claim leaves nothing behind


def test_a_run_claims_its_directory_for_as_long_as_it_trains(tmp_path, monkeypatch):
    seen = []
    real = Trainer.step

    def step(self, images, masks):
        probe = subprocess.run(
            [sys.executable, "-c", "import sys; from recallseg.training.run_directory import claim_run_directory as c; c(sys.argv[1])", str(tmp_path / "run")],
            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
        )  # fmt: skip
        seen.append(probe.stderr.strip().splitlines()[-1] if probe.returncode else "claimed")
        return real(self, images, masks)

    monkeypatch.setattr(Trainer, "step", step)
    trainer(tmp_path / "run", "trainer.max_iters=1", "trainer.val_interval=1").fit()
    assert len(seen) == 1 and seen[0].startswith("recallseg.training.run_directory.RunDirectoryBusy") and f"process {os.getpid()}" in seen[0]


# -- real processes ---------------------------------------------------------------------------


def start_training(run_dir, *overrides):
    return subprocess.Popen(
        [sys.executable, str(REPO / "train.py"), *RUN, *overrides, f"hydra.run.dir={run_dir}"], cwd=REPO,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"},
    )  # fmt: skip


@pytest.mark.slow
def test_two_jobs_on_one_directory_one_trains_and_the_other_is_refused(tmp_path):
    run_dir = tmp_path / "run"
    jobs = [start_training(run_dir, "resume=auto", "trainer.max_iters=4", "trainer.val_interval=2") for _ in range(2)]
    ends = [(job.wait(timeout=300), job.stdout.read(), job) for job in jobs]
    codes = sorted(code for code, _, _ in ends)
    assert codes == [0, 2], [out[-2000:] for _, out, _ in ends]
    (_, trained, winner), (_, refused, _) = sorted(ends, key=lambda end: end[0])
    assert f"another run is using this directory (process {winner.pid} on {socket.gethostname()}" in refused.strip().splitlines()[-1]
    assert "Traceback" not in refused and "iter 1/" not in refused
    log = (run_dir / "train.log").read_text()
    assert log.count("run directory:") == 1 and "another run" not in log  # one run wrote there
    best = load_checkpoint(run_dir / "checkpoints" / "best.pt")
    assert best["best_score"] == read_json(run_dir / "metrics.json")["mIoU"] and last(run_dir)["iteration"] == 4
    assert not (run_dir / LOCK_NAME).exists()


@pytest.mark.slow
def test_a_killed_run_lets_the_next_resume_auto_continue_at_once(tmp_path):
    run_dir = tmp_path / "run"
    job = start_training(run_dir, "trainer.max_iters=40", "trainer.val_interval=2", "trainer.num_workers=1")
    for line in job.stdout:
        if "iter 3/" in line:
            os.kill(job.pid, signal.SIGKILL)  # the training process only: its loader worker lingers a moment
            break
    job.wait(timeout=60)
    resumed = start_training(run_dir, "trainer.max_iters=4", "trainer.val_interval=2", "resume=auto")
    out = resumed.stdout.read()
    assert resumed.wait(timeout=300) == 0, out[-3000:]
    assert "resumed from" in out and "at iteration 2" in out
    assert last(run_dir)["iteration"] == 4
    try:
        os.killpg(job.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
