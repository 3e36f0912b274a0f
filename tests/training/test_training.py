"""End to end through the real entry points, as a user runs them."""

import pytest

from conftest import TINY_OVERRIDES, read_json, run_entry_point


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """One Hydra multirun over the three core losses (the README's sweep), shared by the tests below."""
    root = tmp_path_factory.mktemp("sweep")
    result = run_entry_point(
        "train.py", "-m", "loss=ce,weighted_ce,recall", *TINY_OVERRIDES, "seed=3",
        f"hydra.sweep.dir={root}", "hydra.sweep.subdir=${hydra:runtime.choices.loss}",
        env={"RECALLSEG_CACHE": str(root / "cache")},
    )
    return root, result


def labelled_validation_pixels():
    """Pixels of the sweep's validation split that carry a class (not the ignore index), counted here."""
    from hydra import compose, initialize_config_dir

    from conftest import CONFIG_DIR
    from recallseg.pipeline.builder import build_dataset

    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["output_dir=/tmp/unused", *TINY_OVERRIDES, "seed=3"])
    val = build_dataset(cfg.dataset, "val", transform=None)
    return sum(int((val[i][1] != val.ignore_index).sum()) for i in range(len(val)))


@pytest.mark.parametrize("loss", ["ce", "weighted_ce", "recall"])
def test_each_core_loss_trains_end_to_end(sweep, loss):
    root, result = sweep
    run = root / loss
    metrics = read_json(run / "metrics.json")
    assert set(metrics) >= {"mIoU", "mAcc", "aAcc", "mPrecision", "per_class", "iteration", "checkpoint"}
    assert metrics["iteration"] == 2
    # The summary values recomputed from the per-class rows (null: class absent, left out of the means),
    # and every labelled validation pixel scored once.
    rows = list(metrics["per_class"].values())
    for summary, key in (("mIoU", "iou"), ("mAcc", "acc"), ("mPrecision", "precision")):
        present = [row[key] for row in rows if row[key] is not None]
        assert metrics[summary] == pytest.approx(sum(present) / len(present), rel=1e-12)
    assert metrics["aAcc"] == pytest.approx(sum(row["acc"] * row["pixels"] for row in rows if row["pixels"]) / sum(row["pixels"] for row in rows))
    assert sum(row["pixels"] for row in rows) == labelled_validation_pixels()
    assert set(metrics["per_class"]) == {"road", "sidewalk", "building", "sky", "vegetation", "car", "pedestrian", "traffic sign", "pole"}
    assert (run / "checkpoints" / "last.pt").is_file() and (run / "checkpoints" / "best.pt").is_file()
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert "mPrecision" in result.stdout and "pedestrian" in result.stdout  # the printed table


def test_weighted_ce_statistics_are_cached_from_the_training_split(sweep):
    root, _ = sweep
    stats = list((root / "cache").glob("class_stats_*.json"))
    assert len(stats) == 1
    data = read_json(stats[0])
    assert data["split"] == "train" and len(data["pixel_counts"]) == 9


@pytest.mark.slow
def test_evaluate_reproduces_the_final_validation(sweep, tmp_path):
    root, _ = sweep
    run = root / "recall"
    result = run_entry_point("evaluate.py", f"checkpoint={run / 'checkpoints' / 'last.pt'}", f"hydra.run.dir={tmp_path}")
    evaluated, trained = read_json(tmp_path / "metrics.json"), read_json(run / "metrics.json")
    assert evaluated["mIoU"] == pytest.approx(trained["mIoU"], abs=1e-9)
    assert evaluated["per_class"] == trained["per_class"]
    assert "mIoU" in result.stdout


@pytest.mark.slow
def test_evaluate_overrides_the_stored_config(sweep, tmp_path):
    root, _ = sweep
    ckpt = root / "ce" / "checkpoints" / "best.pt"
    run_entry_point("evaluate.py", f"checkpoint={ckpt}", "dataset.split=test", "dataset.num_test=3", "evaluation.batch_size=1", f"hydra.run.dir={tmp_path}")
    metrics = read_json(tmp_path / "metrics.json")
    assert metrics["split"] == "test"
    total = sum(row["pixels"] for row in metrics["per_class"].values())
    assert 0 < total <= 3 * 64 * 64


@pytest.mark.slow
def test_evaluate_refuses_a_checkpoint_for_other_classes(sweep, tmp_path):
    root, _ = sweep
    (tmp_path / "few_classes.py").write_text(
        "from recallseg.data import SyntheticStreets\n\nclass FewClasses(SyntheticStreets):\n    classes = ('a', 'b')\n"
    )
    ckpt = root / "ce" / "checkpoints" / "last.pt"
    result = run_entry_point(
        "evaluate.py", f"checkpoint={ckpt}", "dataset._target_=few_classes.FewClasses",
        f"hydra.run.dir={tmp_path / 'out'}", check=False, env={"PYTHONPATH": str(tmp_path)},
    )
    assert result.returncode == 2
    assert "9 vs 2 classes" in result.stderr and "['a', 'b']" in result.stderr


@pytest.mark.slow
def test_a_run_directory_with_checkpoints_is_never_overwritten(sweep):
    root, _ = sweep
    result = run_entry_point("train.py", *TINY_OVERRIDES, f"hydra.run.dir={root / 'ce'}", check=False)
    assert result.returncode != 0
    assert "never overwrites" in result.stderr and "resume=auto" in result.stderr


@pytest.mark.slow
def test_missing_checkpoint_gets_a_clear_error(tmp_path):
    result = run_entry_point("evaluate.py", f"checkpoint={tmp_path / 'nope.pt'}", f"hydra.run.dir={tmp_path / 'out'}", check=False)
    assert result.returncode != 0 and "does not exist" in result.stderr
