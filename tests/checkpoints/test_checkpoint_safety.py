"""What a kill, a full disk or a bad file can do to a run directory: refused resumes leave files
untouched, best.pt and the recorded best score agree, orphaned temporaries go, space and
permission problems are named, non-finite checkpoints are refused."""

import errno
import logging
import math
import os
import subprocess
import sys
import types

import pytest
import torch

from conftest import CONFIG_DIR, TINY_OVERRIDES, run_entry_point
from model_checkpoints import write_checkpoint
from recallseg.data.synthetic import CLASSES
from recallseg.checkpoints import format as checkpoint_module
from recallseg.checkpoints.format import CheckpointSpaceError, load_checkpoint, save_checkpoint
from recallseg.checkpoints.resume import RunRefused, best_score_held, newest_resumable, reconciled_best_score

RUN = [o for o in TINY_OVERRIDES if not o.startswith(("trainer.max_iters", "trainer.val_interval"))]


def resumable(iteration, best_score=-math.inf, **extra):
    return {"model": {"w": torch.ones(2)}, "optimizer": {"state": {}}, "scheduler": {}, "iteration": iteration, "best_score": best_score, **extra}


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


# -- resume=auto over unreadable checkpoints ------------------------------------------------


@pytest.mark.slow
def test_resume_auto_refuses_a_directory_of_unreadable_checkpoints_and_changes_nothing(tmp_path):
    run_dir = tmp_path / "run"
    folder = run_dir / "checkpoints"
    save_checkpoint(resumable(4), folder / "last.pt")
    truncate(folder / "last.pt")
    code = f"import os, torch\nclass P:\n    def __reduce__(self):\n        return (os.getpid, ())\ntorch.save({{'format': 'recallseg-checkpoint', 'x': P()}}, '{folder / 'best.pt'}')\n"
    subprocess.run([sys.executable, "-c", code], check=True)
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.iterdir()}
    result = run_entry_point("train.py", *RUN, "trainer.max_iters=2", "resume=auto", f"hydra.run.dir={run_dir}", check=False)
    assert result.returncode == 2, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error: resume=auto: no checkpoint") and "last.pt" in lines[-1] and "best.pt" in lines[-1], result.stderr
    assert "Traceback" not in result.stderr
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.iterdir()} == before
    assert not (run_dir / ".hydra").exists() and not (run_dir / "tensorboard").exists()


def test_a_truncated_last_pt_resumes_from_best_pt_and_says_so(tmp_path, caplog):
    save_checkpoint(resumable(4, 0.5), tmp_path / "best.pt")
    save_checkpoint(resumable(6, 0.5), tmp_path / "last.pt")
    truncate(tmp_path / "last.pt")
    with caplog.at_level(logging.WARNING, "recallseg"):
        path, state = newest_resumable(tmp_path)
    assert path.name == "best.pt" and state["iteration"] == 4
    assert "cannot use" in caplog.text and "last.pt" in caplog.text and "continuing from best.pt at iteration 4" in caplog.text


def test_a_weights_only_best_pt_cannot_stand_in_for_a_truncated_last_pt(tmp_path):
    save_checkpoint({"model": {"w": torch.ones(2)}, "iteration": 4, "best_score": 0.5}, tmp_path / "best.pt")
    save_checkpoint(resumable(6), tmp_path / "last.pt")
    truncate(tmp_path / "last.pt")
    with pytest.raises(RunRefused, match="best.pt holds no training state"):
        newest_resumable(tmp_path)


def test_the_normal_resume_over_a_weights_only_best_pt_logs_no_warning(tmp_path, caplog):
    save_checkpoint({"model": {"w": torch.ones(2)}, "iteration": 4, "best_score": 0.5}, tmp_path / "best.pt")
    save_checkpoint(resumable(6, 0.5), tmp_path / "last.pt")
    with caplog.at_level(logging.INFO, "recallseg"):
        path, state = newest_resumable(tmp_path)
    assert path.name == "last.pt" and state["iteration"] == 6
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text


def test_a_directory_of_only_a_weights_only_best_pt_is_a_fresh_start_in_one_line(tmp_path, caplog):
    """A kill between the first best.pt and the first last.pt: the requeued job starts afresh (not a
    refusal on every retry) and keeps best.pt until a better score replaces it."""
    save_checkpoint({"model": {"w": torch.ones(2)}, "iteration": 2, "best_score": 0.5, "monitor": "mIoU"}, tmp_path / "best.pt")
    with caplog.at_level(logging.INFO, "recallseg"):
        assert newest_resumable(tmp_path) is None
    (record,) = caplog.records
    assert record.levelno == logging.INFO and "best.pt holds no training state" in record.getMessage() and "from scratch" in record.getMessage()
    assert best_score_held(tmp_path, "mIoU") == 0.5 and best_score_held(tmp_path, "mAcc") == -math.inf


def test_a_fresh_start_over_a_weights_only_best_pt_keeps_its_score(trainer):
    folder = trainer.checkpoint_dir
    save_checkpoint({"model": {"w": torch.ones(2)}, "iteration": 2, "best_score": 0.25, "monitor": "mIoU"}, folder / "best.pt")
    trainer.cfg.resume = "auto"
    trainer.iteration = 0
    assert trainer.choose_start() is None
    assert trainer.iteration == 0 and trainer.best_score == 0.25  # a worse first validation leaves best.pt as it is


def test_last_pt_wins_a_tie_and_an_empty_directory_starts_afresh(tmp_path):
    assert newest_resumable(tmp_path / "missing") is None
    save_checkpoint(resumable(4, 0.5, tag="best"), tmp_path / "best.pt")
    save_checkpoint(resumable(4, 0.5, tag="last"), tmp_path / "last.pt")
    assert newest_resumable(tmp_path)[0].name == "last.pt"


# -- best.pt and the recorded best score ----------------------------------------------------


class Killed(BaseException):
    """A simulated SIGKILL: nothing after it runs."""


@pytest.fixture
def trainer(tmp_path):
    from hydra import compose, initialize_config_dir

    from recallseg.training.trainer import Trainer

    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"output_dir={tmp_path / 'run'}", *RUN, "loss=ce", "trainer.max_iters=4"])
    trainer = Trainer(cfg)
    trainer.writer = types.SimpleNamespace(add_scalar=lambda *a, **k: None, add_image=lambda *a, **k: None)
    trainer.iteration = 2
    return trainer


def kill_when_writing(monkeypatch, name, after=False):
    """Kill the process when (``after``: right after) ``name`` is written by an atomic write."""
    real = checkpoint_module.atomic_write

    def atomic_write(path, mode="w"):
        if not after and os.path.basename(path) == name:
            raise Killed
        return real(path, mode)

    monkeypatch.setattr(checkpoint_module, "atomic_write", atomic_write)
    if after:
        real_save = checkpoint_module.save_checkpoint

        def save(state, path):
            real_save(state, path)
            if os.path.basename(path) == name:
                raise Killed

        monkeypatch.setattr("recallseg.training.checkpointing.save_checkpoint", save)


@pytest.mark.parametrize("moment", ["while writing best.pt", "after best.pt, before last.pt"])
def test_after_a_kill_around_a_new_best_last_pt_never_records_a_score_best_pt_lacks(trainer, monkeypatch, moment):
    folder = trainer.checkpoint_dir
    if moment == "while writing best.pt":
        kill_when_writing(monkeypatch, "best.pt")
    else:
        kill_when_writing(monkeypatch, "best.pt", after=True)
    with pytest.raises(Killed):
        trainer._validate_and_checkpoint()
    recorded = load_checkpoint(folder / "last.pt")["best_score"] if (folder / "last.pt").exists() else -math.inf
    held = load_checkpoint(folder / "best.pt")["best_score"] if (folder / "best.pt").exists() else -math.inf
    assert recorded <= held  # a resume from last.pt would write a new best.pt rather than keep a missing one
    if (folder / "best.pt").exists() and (folder / "last.pt").exists():
        assert reconciled_best_score(folder, load_checkpoint(folder / "last.pt"), folder / "last.pt") == held


def test_a_resume_takes_best_pt_s_score_and_resets_it_when_best_pt_is_gone(tmp_path, caplog):
    save_checkpoint(resumable(6, 0.25), tmp_path / "last.pt")
    last = load_checkpoint(tmp_path / "last.pt")
    save_checkpoint(resumable(4, 0.5), tmp_path / "best.pt")  # written, and the kill came before last.pt recorded it
    assert reconciled_best_score(tmp_path, last, tmp_path / "last.pt") == 0.5
    truncate(tmp_path / "best.pt")
    with caplog.at_level(logging.WARNING, "recallseg"):
        assert reconciled_best_score(tmp_path, last, tmp_path / "last.pt") == -math.inf
    assert "cannot be read" in caplog.text and "is reset" in caplog.text
    (tmp_path / "best.pt").unlink()
    caplog.clear()
    with caplog.at_level(logging.WARNING, "recallseg"):
        assert reconciled_best_score(tmp_path, last, tmp_path / "last.pt") == -math.inf
    assert "is missing" in caplog.text and "is reset" in caplog.text


def test_another_directorys_checkpoint_continued_in_a_new_directory_starts_without_a_best_score_or_a_warning(tmp_path, caplog):
    """``resume=<other run>/checkpoints/last.pt hydra.run.dir=<new>``: the new directory has no best.pt yet, as it should."""
    (tmp_path / "other").mkdir()
    save_checkpoint(resumable(6, 0.25), tmp_path / "other" / "last.pt")
    save_checkpoint(resumable(4, 0.25), tmp_path / "other" / "best.pt")
    with caplog.at_level(logging.INFO, "recallseg"):
        score = reconciled_best_score(tmp_path / "new", load_checkpoint(tmp_path / "other" / "last.pt"), tmp_path / "other" / "last.pt")
    assert score == -math.inf and not caplog.records


# -- orphaned temporaries -------------------------------------------------------------------


def test_orphaned_temporaries_are_removed_but_a_live_writer_s_are_kept(tmp_path):
    from recallseg.atomic_files import TEMPORARY_NAME, _host, atomic_write, remove_orphaned_temporaries

    with atomic_write(tmp_path / "last.pt", "wb") as handle:  # the writer's own naming is what is cleaned
        (written,) = [p for p in tmp_path.iterdir() if p.name.startswith(".last.pt")]
        handle.write(b"x")
    match = TEMPORARY_NAME.match(written.name)
    assert match and int(match["pid"]) == os.getpid() and match["host"] == _host()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        names = {
            "dead": f".last.pt.tmp-{dead.pid}@{_host()}", "dead_old_style": f".best.pt.tmp-{dead.pid}",
            "live": f".last.pt.tmp-{live.pid}@{_host()}", "other_host": f".last.pt.tmp-{dead.pid}@elsewhere-node",
            "unrelated": "notes.tmp-1",
        }  # fmt: skip
        for name in names.values():
            (tmp_path / name).write_bytes(b"half a checkpoint")
        removed = remove_orphaned_temporaries(tmp_path)
    finally:
        live.kill()
    assert sorted(p.name for p in removed) == sorted([names["dead"], names["dead_old_style"]])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["last.pt", names["live"], names["other_host"], names["unrelated"]])


def test_opening_a_run_directory_removes_its_orphaned_temporaries(trainer):
    from recallseg.atomic_files import _host

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    orphan = trainer.checkpoint_dir / f".last.pt.tmp-{dead.pid}@{_host()}"
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"half")
    trainer.choose_start()
    assert not orphan.exists()


# -- disk full, read-only directories -------------------------------------------------------


def test_a_save_that_fails_for_space_says_so_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(resumable(2), path)
    before = path.read_bytes()
    big = resumable(4)
    big["model"]["w"] = torch.zeros(1000, 1000)  # 4 MB

    def enospc(obj, handle):
        handle.write(b"part")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", enospc)
    with pytest.raises(CheckpointSpaceError) as caught:
        save_checkpoint(big, path)
    message = str(caught.value)
    assert str(path) in message and "not enough disk space" in message and "needs about 4.0 MB" in message and "MB free" in message
    assert "previous last.pt is unchanged" in message
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]

    # PyTorch's serializer reports a failed write as a RuntimeError: judged by the free space.
    def serializer_error(obj, handle):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", serializer_error)
    monkeypatch.setattr("shutil.disk_usage", lambda _: types.SimpleNamespace(total=10**9, used=10**9, free=1000))
    with pytest.raises(CheckpointSpaceError, match="1000|0.0 MB free"):
        save_checkpoint(big, path)
    monkeypatch.setattr("shutil.disk_usage", lambda _: types.SimpleNamespace(total=10**12, used=0, free=10**12))
    with pytest.raises(RuntimeError, match="enforce fail"):  # enough space: not a space problem, the error stays
        save_checkpoint(big, path)
    assert path.read_bytes() == before


def test_a_save_refused_by_a_full_quota_is_a_space_error_and_writes_nothing(tmp_path, monkeypatch):
    """EDQUOT names itself like ENOSPC, whatever the free space of the disk."""
    path = tmp_path / "last.pt"

    def edquot(obj, handle):
        raise OSError(errno.EDQUOT, "Disk quota exceeded")

    monkeypatch.setattr(torch, "save", edquot)
    monkeypatch.setattr("shutil.disk_usage", lambda _: types.SimpleNamespace(total=10**12, used=0, free=5 * 10**9))
    with pytest.raises(CheckpointSpaceError) as caught:
        save_checkpoint({"model": {"w": torch.zeros(250_000)}}, path)
    assert str(caught.value) == (
        f"cannot save checkpoint {path}: not enough disk space (needs about 1.0 MB, 5000.0 MB free; no last.pt was written); "
        "free space on that disk or choose another hydra.run.dir, then continue with resume=auto"
    )
    assert list(tmp_path.iterdir()) == []


def test_an_unwritable_run_directory_is_found_at_the_start(tmp_path, monkeypatch):
    import tempfile

    from recallseg.training.run_directory import RunDirectoryError, check_writable

    def refuse(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
    with pytest.raises(RunDirectoryError, match=r"cannot write to .*run \(Read-only file system\).*hydra.run.dir"):
        check_writable(tmp_path / "run")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_train_refuses_a_read_only_run_directory_before_training(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    run_dir.chmod(0o555)
    try:
        result = run_entry_point("train.py", *RUN, "trainer.max_iters=2", f"hydra.run.dir={run_dir}", check=False)
    finally:
        run_dir.chmod(0o755)
    assert result.returncode == 2 and "error: cannot write to" in result.stderr and "Traceback" not in result.stderr


# -- non-finite weights ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def nan_checkpoint(tmp_path_factory):
    path = write_checkpoint(tmp_path_factory.mktemp("nan") / "nan.pt", CLASSES, ["dataset.height=64", "dataset.width=64"])
    state = load_checkpoint(path)
    key = next(k for k in state["model"] if k.endswith("running_var"))
    state["model"][key][0] = float("nan")
    save_checkpoint({k: v for k, v in state.items() if k not in ("format", "version")}, path)
    return path, key


@pytest.mark.slow
def test_evaluate_refuses_a_checkpoint_with_a_nan_naming_the_tensor(nan_checkpoint, tmp_path):
    path, key = nan_checkpoint
    result = run_entry_point("evaluate.py", f"checkpoint={path}", f"hydra.run.dir={tmp_path / 'eval'}", check=False)
    assert result.returncode == 2, result.stderr[-3000:]
    assert f"model tensor '{key}' holds NaN or infinite values" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "eval" / "metrics.json").exists()


@pytest.mark.slow
def test_resume_refuses_a_checkpoint_with_a_nan_without_blaming_training(nan_checkpoint, tmp_path):
    path, key = nan_checkpoint
    result = run_entry_point("train.py", *RUN, "trainer.max_iters=9", f"resume={path}", f"hydra.run.dir={tmp_path / 'run'}", check=False)
    assert result.returncode == 2, result.stderr[-3000:]
    assert f"model tensor '{key}' holds NaN" in result.stderr and "Lower optimizer.lr" not in result.stderr


def test_predict_refuses_a_checkpoint_with_a_nan(nan_checkpoint, tmp_path, capsys):
    sys.path.insert(0, str(CONFIG_DIR.parent / "scripts"))
    import predict

    path, key = nan_checkpoint
    image = tmp_path / "a.png"
    import cv2
    import numpy as np

    cv2.imwrite(str(image), np.zeros((32, 32, 3), np.uint8))
    assert predict.main([f"checkpoint={path}", f"input={image}", f"output={tmp_path / 'out'}"]) == 2
    assert f"'{key}' holds NaN" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_a_refused_fresh_run_leaves_the_run_directory_as_it_was(tmp_path):
    """Checkpoints refuse a fresh run into the directory; its recorded config (.hydra) and its log
    stay as they were (Hydra writes no .hydra of its own: recallseg records it once accepted)."""
    run_dir = tmp_path / "run"
    save_checkpoint(resumable(4), run_dir / "checkpoints" / "last.pt")
    (run_dir / ".hydra").mkdir()
    (run_dir / ".hydra" / "config.yaml").write_text("seed: 123\n")
    (run_dir / "train.log").write_text("the first run's log\n")
    before = {p.relative_to(run_dir): p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    result = run_entry_point("train.py", *RUN, "trainer.max_iters=2", "seed=5", f"hydra.run.dir={run_dir}", check=False)
    assert result.returncode == 2 and "never overwrites a run" in result.stderr, result.stderr[-2000:]
    assert {p.relative_to(run_dir): p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before
