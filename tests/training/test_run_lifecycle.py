"""A run's lifecycle: one run per directory, and one way out however the run ends.

A run claims its directory with an OS lock that dies with it: a second run there is refused in
one line naming the holder, and a killed run's claim is gone. Every way a run ends after its
first step (a bad file met in training or in validation, a non-finite loss, a full disk, running
out of memory, a bug) keeps the place in last.pt where the weights and the disk allow, and says
so in the one line of its end. In-process here; the runs of real processes are marked slow.
"""

import errno
import os
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from conftest import CONFIG_DIR, REPO, TINY_OVERRIDES, read_json
from dataset_trees import random_image, write_rgb
from recallseg.checkpoints.format import CheckpointSpaceError, load_checkpoint
from recallseg.commands.user_errors import user_errors
from recallseg.config.schema import validate_train_config
from recallseg.data.files import read_image
from recallseg.data.synthetic import SyntheticStreets
from recallseg.training import checkpointing
from recallseg.training.run_directory import LOCK_NAME, RunDirectoryBusy, claim_run_directory, release_run_directory
from recallseg.training.trainer import Trainer

# A small network: what is tested is how a run ends, not what it learns.
RUN = [
    *[o for o in TINY_OVERRIDES if not o.startswith(("trainer.max_iters", "trainer.val_interval", "dataset.num_val"))],
    "dataset.num_val=2", "loss=ce", "model.arch=Unet", "model.encoder_name=tu-mobilenetv3_small_050", "~model.encoder_output_stride", "+model.encoder_depth=3",
    "+model.decoder_channels=[32,16,8]",
]  # fmt: skip


def trainer(run_dir, *overrides):
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[*RUN, f"output_dir={run_dir}", *overrides])
    return Trainer(OmegaConf.create(validate_train_config(cfg)))


@pytest.fixture(autouse=True)
def cheap_runs(monkeypatch):
    from recallseg.training.tensorboard_images import ValidationPictures

    monkeypatch.setattr(ValidationPictures, "log", lambda *args, **kwargs: None)  # TensorBoard charts: most of a validation's time
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


@pytest.fixture
def truncated_png(tmp_path):
    path = write_rgb(tmp_path / "data" / "val_007.png", random_image(np.random.default_rng(0), 32, 32))
    path.write_bytes(path.read_bytes()[:60])
    return path


def bad_file_in(monkeypatch, split, path, from_call=1):
    """The dataset's ``split`` meets the damaged ``path`` at its ``from_call``-th sample and after (until undone)."""
    real, calls = SyntheticStreets.load, {"n": 0}

    def load(self, index):
        if self.split == split:
            calls["n"] += 1
            if calls["n"] >= from_call:
                read_image(path)  # the decoder's own error, naming the file
        return real(self, index)

    monkeypatch.setattr(SyntheticStreets, "load", load)


# -- a data error ends the run with its place kept --------------------------------------------


def test_a_bad_validation_file_at_the_first_validation_leaves_last_pt_of_that_iteration(tmp_path, monkeypatch, capsys, truncated_png):
    """The validation comes after the checkpoint it would prevent: last.pt holds iteration 2 with its
    validation pending, and once the file is fixed the resumed run ends where a straight run ends."""
    with monkeypatch.context() as patch:
        bad_file_in(patch, "val", truncated_png, from_call=2)  # call 1: the inference-memory check reads a frame size before training
        code, line = ending(trainer(tmp_path / "run", "trainer.max_iters=4", "trainer.val_interval=2"), capsys)
    assert code == 2
    assert line.startswith(f"error: cannot decode {truncated_png}") and "stopped at iteration 2 during validation" in line, line
    assert "last.pt saved with that validation pending" in line and "resume=auto" in line
    state = last(tmp_path / "run")
    assert state["iteration"] == 2 and state["validation_pending"] is True
    assert not (tmp_path / "run" / "checkpoints" / "best.pt").exists()

    trainer(tmp_path / "run", "trainer.max_iters=4", "trainer.val_interval=2", "resume=auto").fit()
    trainer(tmp_path / "straight", "trainer.max_iters=4", "trainer.val_interval=2").fit()
    resumed, straight = last(tmp_path / "run"), last(tmp_path / "straight")
    assert resumed["iteration"] == straight["iteration"] == 4
    for key in straight["model"]:
        assert torch.equal(resumed["model"][key], straight["model"][key]), key
    assert read_json(tmp_path / "run" / "metrics.json")["mIoU"] == read_json(tmp_path / "straight" / "metrics.json")["mIoU"]


def test_a_bad_training_file_met_mid_run_saves_last_pt(tmp_path, monkeypatch, capsys, truncated_png):
    bad_file_in(monkeypatch, "train", truncated_png, from_call=5)  # batch size 2: iteration 3's first sample
    code, line = ending(trainer(tmp_path / "run", "trainer.max_iters=6", "trainer.val_interval=100"), capsys)
    assert code == 2 and line.startswith(f"error: cannot decode {truncated_png}"), line
    assert "stopped at iteration 2, last.pt saved: once that is fixed, continue with: " in line and line.endswith(f"resume=auto hydra.run.dir={tmp_path / 'run'}")
    assert last(tmp_path / "run")["iteration"] == 2 and last(tmp_path / "run")["validation_pending"] is False


# -- every other way a run ends ---------------------------------------------------------------


def at_iteration(n, action):
    """A step that does ``action(trainer)`` in iteration ``n`` (returning a loss replaces the step)."""
    real = Trainer.step

    def step(self, images, masks):
        if self.iteration + 1 == n:
            loss = action(self)
            if loss is not None:
                self.scheduler.step()
                return loss
        return real(self, images, masks)

    return step


def out_of_memory(run):
    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB. GPU 0 has a total capacity of 79.19 GiB of which 1.5 GiB is free. Of the allocated memory ...")


def nan_loss(run):
    return torch.tensor(float("nan"))


def nan_weights(run):
    with torch.no_grad():
        next(run.network.parameters()).fill_(float("nan"))
    return torch.tensor(float("nan"))


@pytest.mark.parametrize(
    "cause, at, expected, saved_at",
    [
        (out_of_memory, 4, "error: CUDA out of memory. Tried to allocate 20.00 GiB", 3),  # the state before the failed step
        (nan_loss, 3, "error: non-finite training loss at 1 of iterations 3..3", 3),  # the weights are finite: kept
        (nan_weights, 3, "error: non-finite training loss at 1 of iterations 3..3", 2),  # they are not: the previous last.pt
    ],
    ids=["torch out of memory", "non-finite loss", "non-finite weights"],
)
def test_out_of_memory_and_non_finite_numbers_end_in_one_line_with_the_place_kept(tmp_path, monkeypatch, capsys, cause, at, expected, saved_at):
    monkeypatch.setattr(Trainer, "step", at_iteration(at, cause))
    code, line = ending(trainer(tmp_path / "run", "trainer.max_iters=4", "trainer.val_interval=2"), capsys)
    assert code == 2 and line.startswith(expected), line
    assert last(tmp_path / "run")["iteration"] == saved_at
    if cause is nan_weights:
        assert "last.pt not saved (model tensor" in line and "is not finite); the previous last.pt (iteration 2) is kept" in line
    else:
        assert f"stopped at iteration {saved_at}, last.pt saved" in line


def test_a_full_disk_keeps_the_previous_last_pt_and_says_both(tmp_path, monkeypatch, capsys):
    real = checkpointing.save_checkpoint

    def save(state, path):
        if state["iteration"] == 4:
            raise CheckpointSpaceError(f"cannot write {path}: not enough disk space (needs about 1.0 MB, 0.0 MB free); the previous {path.name} is unchanged")
        real(state, path)

    monkeypatch.setattr(checkpointing, "save_checkpoint", save)
    code, line = ending(trainer(tmp_path / "run", "trainer.max_iters=4", "trainer.val_interval=2"), capsys)
    assert code == 2 and line.startswith("error: cannot write") and "not enough disk space" in line, line
    assert "last.pt not saved (cannot write" in line and "the previous last.pt (iteration 2) is kept" in line
    assert last(tmp_path / "run")["iteration"] == 2


def test_an_os_error_naming_no_file_from_a_full_disk_is_one_line(tmp_path, monkeypatch, capsys):
    def disk_full(run):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Trainer, "step", at_iteration(2, disk_full))
    code, line = ending(trainer(tmp_path / "run", "trainer.max_iters=4", "trainer.val_interval=100"), capsys)
    assert code == 2 and line.startswith("error: No space left on device; free space") and "stopped at iteration 1, last.pt saved" in line, line


def test_a_message_that_explains_itself_over_lines_keeps_them_below_the_place_kept(tmp_path, monkeypatch, capsys):
    from recallseg.errors import DatasetError

    def layout(run):
        raise DatasetError("dataset.root: no image folder found\nexpected:\n  images/train/*.png")

    monkeypatch.setattr(Trainer, "step", at_iteration(2, layout))
    with pytest.raises(SystemExit) as ended:
        with user_errors():
            trainer(tmp_path / "run", "trainer.max_iters=4", "trainer.val_interval=100").fit()
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()][-3:]
    assert ended.value.code == 2
    assert lines[0].startswith("error: dataset.root: no image folder found; stopped at iteration 1, last.pt saved"), lines
    assert lines[1:] == ["  expected:", "    images/train/*.png"]


def test_a_bug_keeps_its_traceback_and_last_pt_is_saved_before_it(tmp_path, monkeypatch, caplog):
    def bug(run):
        raise ZeroDivisionError("a bug in a user's loss")

    monkeypatch.setattr(Trainer, "step", at_iteration(3, bug))
    with pytest.raises(ZeroDivisionError, match="a bug in a user's loss"):  # not a one-line exit: a bug
        with user_errors():
            trainer(tmp_path / "run", "trainer.max_iters=4", "trainer.val_interval=100").fit()
    assert last(tmp_path / "run")["iteration"] == 2
    assert "stopped at iteration 2, last.pt saved" in caplog.text and "the error below ended the run" in caplog.text


# -- one run per directory --------------------------------------------------------------------

HOLD = """
import os, sys, time
from recallseg.training.run_directory import claim_run_directory
claim_run_directory(sys.argv[1])
if len(sys.argv) > 2:  # a child that outlives its parent for a while, as a loader worker can
    ready, started = os.pipe()
    if os.fork() == 0:
        os.write(started, b"x")  # the fork's hooks have run
        time.sleep(60)
        os._exit(0)
    os.read(ready, 1)
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


def test_a_filesystem_without_locks_runs_unprotected_and_says_so(tmp_path, monkeypatch, caplog):
    import fcntl

    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    claim_run_directory(tmp_path / "run")  # not a refusal: the run goes on
    assert "cannot lock" in caplog.text and "would not be refused" in caplog.text
    assert list((tmp_path / "run").iterdir()) == []
    release_run_directory(tmp_path / "run")


# -- where a run can be written --------------------------------------------------------------


def test_a_default_run_directory_that_cannot_be_created_is_one_line(tmp_path, monkeypatch, capsys):
    from recallseg.commands.train import train_main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "outputs").write_text("a file where the run directories would go")
    monkeypatch.setattr(sys, "argv", ["train.py", *RUN])
    with pytest.raises(SystemExit) as ended:
        train_main()
    err = capsys.readouterr().err
    assert ended.value.code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("error: cannot write to outputs (it, or a directory it would be in, is a file)") and "hydra.run.dir" in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_a_read_only_working_directory_is_one_line(tmp_path, monkeypatch, capsys):
    from recallseg.commands.train import train_main

    monkeypatch.chdir(tmp_path)
    tmp_path.chmod(0o555)
    monkeypatch.setattr(sys, "argv", ["train.py", *RUN])
    try:
        with pytest.raises(SystemExit) as ended:
            train_main()
    finally:
        tmp_path.chmod(0o755)
    assert ended.value.code == 2 and "error: cannot write to outputs" in capsys.readouterr().err


@pytest.mark.parametrize("where", ["under a file", "on a full disk"])
def test_a_statistics_cache_that_cannot_be_written_is_a_warning(tmp_path, monkeypatch, caplog, where):
    from recallseg.pipeline import class_statistics

    (tmp_path / "a_file").write_text("not a directory")
    cache = tmp_path / "a_file" / "cache"
    if where == "on a full disk":
        cache = tmp_path / "cache"

        def full(path, mode="w"):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))

        monkeypatch.setattr(class_statistics, "atomic_write", full)
    run = trainer(tmp_path / "run", "loss=weighted_ce", f"paths.cache_dir={cache}")  # the statistics are built with the run
    assert run.criterion.weights.shape == (9,) and torch.isfinite(run.criterion.weights).all()
    assert "cannot write the class-statistics cache" in caplog.text and "set paths.cache_dir" in caplog.text
    assert [r.levelname for r in caplog.records if "class-statistics cache" in r.getMessage()] == ["WARNING"]


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


def test_every_test_the_guarantees_table_names_exists():
    import re

    page = (REPO / "docs" / "resume-and-failures.md").read_text()
    table = page.split("## Guarantees", 1)[1]
    named = re.findall(r"`(tests/[\w/]+\.py)::(\w+)`", table)
    assert len(named) >= 20
    for path, name in named:
        assert re.search(rf"^def {name}\(", (REPO / path).read_text(), re.M), f"{path}::{name}"
