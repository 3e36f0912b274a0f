"""Sweeps on Hydra launchers (joblib: parallel runs on this machine; submitit: SLURM, here its
local stand-in) and the loss comparison on top of them."""

import csv
import os
import signal
import subprocess
import sys
import time

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from conftest import CONFIG_DIR, TINY_OVERRIDES, read_json, run_entry_point
from recallseg.commands import compare_losses, comparison_report

pytest.importorskip("hydra_plugins.hydra_joblib_launcher")

# Loader workers as in a default run: a job in a launcher's pool process must still start them.
WORKERS = ["trainer.num_workers=1", "evaluation.num_workers=1"]


def test_sweeps_go_under_outputs_like_single_runs():
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = OmegaConf.to_container(compose("train", return_hydra_config=True).hydra, resolve=False)
    assert cfg["sweep"]["dir"].startswith("outputs/multirun/") and cfg["run"]["dir"].startswith("outputs/")


def test_the_comparison_keeps_the_order_given(tmp_path):
    rows = [{"loss": loss, "seed": seed} for loss in ("ce", "focal", "recall") for seed in (1, 0)]
    assert [(r["loss"], r["seed"]) for r in compare_losses.in_order(rows, ["recall", "ce"])] == [
        ("recall", 0), ("recall", 1), ("ce", 0), ("ce", 1), ("focal", 0), ("focal", 1),
    ]  # fmt: skip
    (tmp_path / "multirun.yaml").write_text("hydra:\n  overrides:\n    task:\n    - loss=recall,ce\n    - seed=0\n")
    assert compare_losses.swept_losses(tmp_path) == ["recall", "ce"]
    command = compare_losses.sweep_command(["recall", "ce"], ["0"], tmp_path, ["trainer.max_iters=2"], "joblib")
    assert "loss=recall,ce" in command and "hydra/launcher=joblib" in command and command[-1] == "trainer.max_iters=2"
    assert command.index("seed=0") < command.index("loss=recall,ce")  # seeds outer: a sweep cut short has every loss
    assert "resume=auto" in command  # the same command finishes a sweep cut short
    assert "resume=auto" not in compare_losses.sweep_command(["ce"], ["0"], tmp_path, ["resume=null"])


# A sweep as a process tree: the launcher (dies at SIGTERM) and its pool worker, a grandchild of
# recallseg-compare, which takes half a second to save when signalled, as a run saves last.pt.
FAKE_WORKER = """
import os, signal, sys, time
def save(*_):
    time.sleep(0.5)
    open(os.path.join(sys.argv[1], "saved"), "w").write(str(os.getpid()))
    sys.exit(143)
signal.signal(signal.SIGTERM, save)
open(os.path.join(sys.argv[1], "ready"), "w").write(str(os.getpid()))
time.sleep(60)
"""
FAKE_LAUNCHER = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', sys.argv[1], sys.argv[2]]); time.sleep(60)"


@pytest.mark.parametrize("sent, status", [(signal.SIGTERM, 143), (signal.SIGHUP, 129)], ids=["SIGTERM", "a closed terminal"])
def test_a_signal_to_compare_alone_reaches_every_run_of_its_sweep_and_waits_for_their_saves(tmp_path, sent, status):
    """``kill <pid of recallseg-compare>``, not its group: the pool workers training the runs must stop and save too."""
    tree = [sys.executable, "-c", FAKE_LAUNCHER, FAKE_WORKER, str(tmp_path)]
    driver = (
        "from recallseg.commands import compare_losses\n"
        f"compare_losses.sweep_command = lambda *args: {tree!r}\n"
        f"compare_losses.main(['--losses', 'ce', '--out', {str(tmp_path / 'sweep')!r}])\n"
    )
    compare = subprocess.Popen([sys.executable, "-c", driver], stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 60
    while not (tmp_path / "ready").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    worker = int((tmp_path / "ready").read_text())
    os.kill(compare.pid, sent)
    _, err = compare.communicate(timeout=30)
    assert compare.returncode == status, err
    assert (tmp_path / "saved").read_text() == str(worker)  # compare ended after the worker's save, not before
    assert f"stopped by {sent.name}: the runs under {tmp_path / 'sweep'} saved their last.pt" in err
    with pytest.raises(ProcessLookupError):
        os.kill(worker, 0)


def test_a_signal_while_the_sweep_starts_still_reaches_it(tmp_path):
    """SIGTERM to compare before Popen has returned: compare must not die alone, leaving the sweep running."""
    tree = [sys.executable, "-c", FAKE_LAUNCHER, FAKE_WORKER, str(tmp_path)]
    driver = (
        "import os, signal, subprocess\n"
        "from recallseg.commands import compare_losses\n"
        "class Starting(subprocess.Popen):\n"
        "    def __init__(self, *args, **kwargs):\n"
        "        super().__init__(*args, **kwargs)\n"
        f"        open({str(tmp_path / 'launcher')!r}, 'w').write(str(self.pid))\n"
        "        os.kill(os.getpid(), signal.SIGTERM)\n"
        "subprocess.Popen = Starting\n"
        f"compare_losses.sweep_command = lambda *args: {tree!r}\n"
        f"compare_losses.main(['--losses', 'ce', '--out', {str(tmp_path / 'sweep')!r}])\n"
    )
    with open(tmp_path / "err", "w") as err:  # not a pipe: a sweep left running would hold it open
        compare = subprocess.Popen([sys.executable, "-c", driver], stderr=err, start_new_session=True)
    try:
        assert compare.wait(timeout=30) == 143, (tmp_path / "err").read_text()
        with pytest.raises(ProcessLookupError):
            os.killpg(int((tmp_path / "launcher").read_text()), 0)
    finally:
        try:
            os.killpg(int((tmp_path / "launcher").read_text()), signal.SIGKILL)
        except (ProcessLookupError, FileNotFoundError):
            pass


@pytest.mark.slow
def test_compare_losses_runs_two_jobs_in_parallel_on_joblib(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RECALLSEG_CACHE", str(tmp_path / "cache"))
    sweep = tmp_path / "sweep"
    compare_losses.main(
        ["--losses", "recall,ce", "--launcher", "joblib", "--out", str(sweep), "--split", "test", "--", *TINY_OVERRIDES, *WORKERS, "hydra.launcher.n_jobs=2"]
    )  # fmt: skip
    rows = {r["loss"]: r for r in csv.DictReader((sweep / "comparison.csv").open())}
    for loss in ("recall", "ce"):
        assert read_json(sweep / f"{loss}_seed0" / "metrics.json")["iteration"] == 2
        scores = read_json(sweep / f"{loss}_seed0" / "eval_test" / "metrics.json")  # best.pt on the test split
        assert scores["split"] == "test" and scores["checkpoint"].endswith("best.pt")
        assert rows[loss]["split"] == "test" and float(rows[loss]["mIoU"]) == scores["mIoU"]
    table = (sweep / "comparison.md").read_text()
    assert "scored on the test split" in table
    # The same command again trains nothing: finished runs are only validated again.
    written = {p: p.stat().st_mtime_ns for p in sweep.glob("*/checkpoints/*.pt")}
    compare_losses.main(["--losses", "recall,ce", "--launcher", "joblib", "--out", str(sweep), "--", *TINY_OVERRIDES, *WORKERS, "hydra.launcher.n_jobs=2"])
    assert len(written) == 4 and {p: p.stat().st_mtime_ns for p in sweep.glob("*/checkpoints/*.pt")} == written
    assert table.index("| recall |") < table.index("| ce |")  # the order given, not alphabetical
    assert (sweep / "comparison.png").is_file()
    assert "Joblib" in (sweep / "multirun.yaml").read_text()


@pytest.mark.slow
def test_a_two_job_sweep_on_submitit_local(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    sweep = tmp_path / "sweep"
    run_entry_point(
        "train.py", "-m", "loss=ce,recall", *TINY_OVERRIDES, *WORKERS, "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10",
        f"hydra.sweep.dir={sweep}", "hydra.sweep.subdir=${hydra:runtime.choices.loss}", env={"RECALLSEG_CACHE": str(tmp_path / "cache")}, cwd=tmp_path,
    )  # fmt: skip
    for loss in ("ce", "recall"):
        assert read_json(sweep / loss / "metrics.json")["iteration"] == 2
        assert (sweep / loss / "checkpoints" / "best.pt").is_file()
    assert list((sweep / ".submitit").rglob("*_result.pkl"))  # the jobs ran through submitit


def test_the_comparison_shows_and_writes_where_its_runs_came_from(tmp_path, monkeypatch):
    """Runs that share their code, versions and machine show them once under the tables; every CSV row
    carries its own, "unknown" for a run that recorded none."""
    import csv
    import json

    import torch

    from recallseg.runtime.device import Runtime
    from recallseg.runtime.environment import describe_environment, environment

    record = {**environment(Runtime(torch.device("cpu"), None, False)), "config_hash": "0123456789abcdef"}
    per_class = {name: {"iou": 0.5, "acc": 0.5, "precision": 0.5} for name in ("road", "car")}
    for name, loss, seed, run in (("ce_seed0", "ce", 0, record), ("ce_seed1", "ce", 1, record), ("recall_seed0", "recall", 0, None)):
        folder = tmp_path / name
        (folder / ".hydra").mkdir(parents=True)
        (folder / ".hydra" / "config.yaml").write_text(f"seed: {seed}\nloss: {{_target_: x}}\ntrainer: {{max_iters: 2}}\n")
        (folder / ".hydra" / "hydra.yaml").write_text(f"hydra:\n  runtime:\n    choices:\n      loss: {loss}\n")
        metrics = {"mIoU": 0.5, "mAcc": 0.5, "mPrecision": 0.5, "aAcc": 0.5, "per_class": per_class, **({"run": run} if run else {})}
        (folder / "metrics.json").write_text(json.dumps(metrics))
    monkeypatch.setattr(comparison_report, "plot", lambda *args: None)  # the chart is not what this checks
    markdown = comparison_report.summarize(tmp_path, compare_losses.in_order(compare_losses.collect(tmp_path), ["ce", "recall"]))
    shown = describe_environment(record)
    assert markdown.index("| ce |") < markdown.index("Environment of ce_seed0, ce_seed1:") < markdown.index(shown[0])
    assert all(markdown.count(line) == 1 for line in shown) and "Environment of recall_seed0:" in markdown and "- code: unknown" in markdown
    assert (tmp_path / "comparison.md").read_text() == markdown
    rows = list(csv.DictReader((tmp_path / "comparison.csv").open()))
    assert [(r["torch"], r["cpu"], r["precision"], r["gpu"], r["config hash"]) for r in rows] == [
        (torch.__version__, record["machine"]["cpu"], "float32", "", "0123456789abcdef")
    ] * 2 + [("unknown",) * 5]
