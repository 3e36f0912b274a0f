"""Which checkpoint a run continues from, and when a fresh run is refused (``checkpoints.resume``)."""

import math

import pytest
import torch

from recallseg.checkpoints.format import save_checkpoint
from recallseg.checkpoints.resume import RunRefused, Start, newest_resumable, refuse_existing_run, resume_start


def resumable(iteration, tag):
    return {"model": {"w": torch.ones(2)}, "optimizer": {}, "scheduler": {}, "iteration": iteration, "best_score": -math.inf, "tag": tag}


def test_a_fresh_run_is_refused_by_any_checkpoint_in_the_directory(tmp_path):
    refuse_existing_run(tmp_path / "missing")
    refuse_existing_run(tmp_path)  # empty
    (tmp_path / "best.pt").write_bytes(b"weights")
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    with pytest.raises(RunRefused) as info:
        refuse_existing_run(tmp_path)
    assert str(info.value) == (
        f"{tmp_path} already holds checkpoints (best.pt): recallseg never overwrites a run; continue it with resume=auto, "
        "or choose another hydra.run.dir"
    )


def test_resume_auto_takes_the_checkpoint_with_the_most_iterations(tmp_path):
    save_checkpoint(resumable(6, "last"), tmp_path / "last.pt")
    save_checkpoint(resumable(8, "best"), tmp_path / "best.pt")
    save_checkpoint(resumable(2, "early"), tmp_path / "early.pt")
    path, state = newest_resumable(tmp_path)
    assert (path.name, state["iteration"], state["tag"]) == ("best.pt", 8, "best")


def test_resume_names_a_start_as_auto_a_checkpoint_file_or_a_run_directory(tmp_path):
    run = tmp_path / "run"
    assert resume_start(run / "checkpoints", None) == Start() == resume_start(run / "checkpoints", "auto")
    save_checkpoint(resumable(6, "last"), run / "checkpoints" / "last.pt")
    save_checkpoint(resumable(2, "early"), run / "checkpoints" / "early.pt")
    with pytest.raises(RunRefused):
        resume_start(run / "checkpoints", None)
    assert resume_start(run / "checkpoints", "auto").path == run / "checkpoints" / "last.pt"
    elsewhere = tmp_path / "new" / "checkpoints"
    assert resume_start(elsewhere, str(run)).path == run / "checkpoints" / "last.pt"  # a run directory
    assert resume_start(elsewhere, str(run / "checkpoints")).path == run / "checkpoints" / "last.pt"  # its checkpoints
    start = resume_start(elsewhere, str(run / "checkpoints" / "early.pt"))  # a file
    assert (start.path.name, start.state["tag"]) == ("early.pt", "early")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunRefused, match="holds no checkpoint a run can continue from"):
        resume_start(elsewhere, str(tmp_path / "empty"))
