"""``trainer.omp_passive=true``: the command restarts itself with ``OMP_WAIT_POLICY=PASSIVE`` before
anything is claimed or built (OpenMP reads it once, when torch loads); an exported value wins."""

import os
import subprocess
import sys

import pytest

from conftest import REPO
from recallseg.runtime import openmp
from recallseg.runtime.openmp import passive_wait_note, restart_with_passive_wait


class Restarted(Exception):
    pass


@pytest.fixture
def restarts(monkeypatch):
    """The argument lists ``os.execv`` was called with (it raises ``Restarted`` instead of restarting)."""
    calls = []

    def execv(path, args):
        calls.append((path, args))
        raise Restarted

    monkeypatch.setattr(os, "execv", execv)
    monkeypatch.delenv(openmp.VARIABLE, raising=False)
    return calls


def test_the_process_restarts_with_the_variable_once_torch_is_loaded(restarts):
    import torch  # noqa: F401

    with pytest.raises(Restarted):
        restart_with_passive_wait(True)
    assert restarts == [(sys.executable, [sys.executable, *sys.orig_argv[1:]])] and os.environ[openmp.VARIABLE] == "PASSIVE"


def test_nothing_restarts_unasked_when_exported_or_before_torch(restarts, monkeypatch):
    restart_with_passive_wait(False)
    assert openmp.VARIABLE not in os.environ
    monkeypatch.setenv(openmp.VARIABLE, "ACTIVE")
    restart_with_passive_wait(True)
    assert os.environ[openmp.VARIABLE] == "ACTIVE"
    monkeypatch.delenv(openmp.VARIABLE)
    monkeypatch.delitem(sys.modules, "torch")  # OpenMP not loaded yet: the variable is in time
    restart_with_passive_wait(True)
    assert os.environ[openmp.VARIABLE] == "PASSIVE" and restarts == []


def test_a_run_that_does_not_wait_passively_says_why(monkeypatch):
    monkeypatch.delenv(openmp.VARIABLE, raising=False)
    assert passive_wait_note(False) is None
    assert "export OMP_WAIT_POLICY=PASSIVE" in passive_wait_note(True)
    monkeypatch.setenv(openmp.VARIABLE, "active")
    assert "OMP_WAIT_POLICY=active was exported and applies" in passive_wait_note(True)
    monkeypatch.setenv(openmp.VARIABLE, "passive")
    assert passive_wait_note(True) is None


@pytest.mark.parametrize("argv", [["trainer.omp_passive=true"], ["-m", "loss=ce,recall", "trainer.omp_passive=true"]])
def test_train_restarts_before_it_claims_a_run_directory(restarts, monkeypatch, tmp_path, argv):
    from recallseg.commands import train

    monkeypatch.setattr(train, "_train_app", lambda: pytest.fail("went on without restarting"))
    monkeypatch.setattr(sys, "argv", ["train.py", *argv, f"hydra.run.dir={tmp_path / 'run'}"])
    with pytest.raises(Restarted):
        train.train_main()
    assert len(restarts) == 1 and not (tmp_path / "run").exists()


@pytest.mark.slow
def test_a_real_restart_runs_the_same_command_with_the_variable():
    code = (
        "import os, torch; from recallseg.runtime.openmp import restart_with_passive_wait; "
        "print(os.getpid(), os.environ.get('OMP_WAIT_POLICY'), flush=True); restart_with_passive_wait(True)"
    )
    env = {key: value for key, value in os.environ.items() if key != "OMP_WAIT_POLICY"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    printed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True, timeout=120).stdout.split()
    assert printed[1::2] == ["None", "PASSIVE"] and printed[0] == printed[2]  # one process, restarted once
