"""The commands of a non-editable install, run from a directory that is not the checkout: the
wheel carries every module and config file the commands need."""

import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO, TINY_OVERRIDES, read_json

COMMANDS = ["recallseg-train", "recallseg-eval", "recallseg-predict", "recallseg-export", "recallseg-compare", "recallseg-check-data", "recallseg-class-stats", "recallseg-benchmark"]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """recallseg built as a wheel and installed into a folder of its own (dependencies from this environment)."""
    root = tmp_path_factory.mktemp("installed")
    # Built from a copy of the sources: a build/ folder left in the checkout would lend the wheel its files.
    source = root / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "outputs", "__pycache__", ".pytest_cache"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(root / "wheel"), str(source)], check=True, capture_output=True)
    wheel = next((root / "wheel").glob("recallseg-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(root / "site"), str(wheel)], check=True, capture_output=True)
    env = {**os.environ, "PYTHONPATH": str(root / "site"), "PYTHONUNBUFFERED": "1", "RECALLSEG_CACHE": str(root / "cache")}
    return root, env


def command(installed, name, *args, cwd):
    root, env = installed
    return subprocess.run([str(root / "site" / "bin" / name), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_every_command_answers_help_from_the_installed_package(installed, tmp_path):
    where = command(installed, "recallseg-train", "--help", cwd=tmp_path)
    assert where.returncode == 0 and "loss: ce, class_balanced" in where.stdout, where.stderr[-2000:]
    for name in COMMANDS:
        result = command(installed, name, "--help", cwd=tmp_path)
        text = result.stdout + result.stderr
        assert result.returncode == 0 and (name in text or "usage" in text.lower()), (name, result.stderr[-2000:])
    root, env = installed
    located = subprocess.run([sys.executable, "-c", "import recallseg; print(recallseg.__file__)"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert located.stdout.strip().startswith(str(root / "site")), located.stdout  # not the checkout


@pytest.mark.slow
def test_train_evaluate_predict_and_export_from_another_directory(installed, tmp_path):
    run_dir = tmp_path / "run"
    trained = command(installed, "recallseg-train", *TINY_OVERRIDES, "loss=recall", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr[-3000:]
    best = run_dir / "checkpoints" / "best.pt"
    scored = command(installed, "recallseg-eval", f"checkpoint={best}", f"hydra.run.dir={tmp_path / 'eval'}", cwd=tmp_path)
    assert scored.returncode == 0, scored.stderr[-3000:]
    assert abs(read_json(tmp_path / "eval" / "metrics.json")["mIoU"] - read_json(run_dir / "metrics.json")["mIoU"]) < 1e-6
    import cv2
    import numpy as np

    (tmp_path / "photos").mkdir()
    cv2.imwrite(str(tmp_path / "photos" / "street.png"), np.random.default_rng(0).integers(0, 255, (40, 72, 3), dtype=np.uint8))
    predicted = command(installed, "recallseg-predict", f"checkpoint={best}", "input=photos", "output=masks", "device=cpu", cwd=tmp_path)
    assert predicted.returncode == 0 and (tmp_path / "masks" / "color" / "street.png").is_file(), predicted.stderr[-3000:]
    exported = command(installed, "recallseg-export", f"checkpoint={best}", "output=model.onnx", cwd=tmp_path)
    assert exported.returncode == 0 and (tmp_path / "model.onnx").stat().st_size > 1_000_000, exported.stderr[-3000:]
