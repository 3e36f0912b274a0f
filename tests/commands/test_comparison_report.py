"""The loss comparison's report: which scores it reads, the statistics over seeds, the figure."""

import csv
import json
import math

import pytest

from recallseg.commands import compare_losses, comparison_report

PER_CLASS = ("road", "pole")


def write_run(sweep, name, loss, seed, val_miou, test_miou=None, test_macc=None):
    """A finished run as the sweep leaves it: its config, Hydra's choices, its last validation and,
    when given, its best.pt's scores on the test split."""
    run = sweep / name
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text(f"seed: {seed}\nloss: {{_target_: x}}\ntrainer: {{max_iters: 400}}\n")
    (run / ".hydra" / "hydra.yaml").write_text(f"hydra:\n  runtime:\n    choices:\n      loss: {loss}\n")

    def metrics(miou, macc, **extra):
        per_class = {c: {"iou": miou, "acc": macc, "precision": 0.5} for c in PER_CLASS}
        return json.dumps({"mIoU": miou, "mAcc": macc, "mPrecision": 0.5, "aAcc": 0.9, "per_class": per_class, **extra})

    (run / "metrics.json").write_text(metrics(val_miou, 0.8, run={"config_hash": "trained"}))
    if test_miou is not None:
        (run / "eval_test").mkdir()
        (run / "eval_test" / "metrics.json").write_text(metrics(test_miou, test_macc, split="test", run={"config_hash": "evaluated"}, training_run={"config_hash": "trained"}))


def test_the_test_split_scores_are_read_not_the_runs_own_validation(tmp_path):
    write_run(tmp_path, "ce_seed0", "ce", 0, val_miou=0.9, test_miou=0.6, test_macc=0.7)
    write_run(tmp_path, "ce_seed1", "ce", 1, val_miou=0.9, test_miou=0.8, test_macc=0.9)
    validation = compare_losses.collect(tmp_path)
    scored = compare_losses.collect(tmp_path, "test")
    assert [r["mIoU"] for r in validation] == [0.9, 0.9] and {r["split"] for r in validation} == {"val"}
    assert [r["mIoU"] for r in scored] == [0.6, 0.8] and {r["split"] for r in scored} == {"test"}
    assert {r["run"]["config_hash"] for r in scored} == {"trained"}  # where the weights came from


def test_runs_not_yet_scored_on_the_split_are_left_out_and_none_is_an_error(tmp_path):
    write_run(tmp_path, "ce_seed0", "ce", 0, val_miou=0.9, test_miou=0.6, test_macc=0.7)
    write_run(tmp_path, "ce_seed1", "ce", 1, val_miou=0.9)
    assert [r["seed"] for r in compare_losses.collect(tmp_path, "test")] == [0]
    with pytest.raises(SystemExit, match="no finished runs"):
        compare_losses.collect(tmp_path, "val_other")


def test_mean_and_sample_standard_deviation_in_percent():
    assert comparison_report.mean_std([0.5, 0.7]) == pytest.approx((60.0, 100 * math.sqrt(0.02)))
    assert comparison_report.mean_std([0.5, None, float("nan")]) == (50.0, 0.0)
    assert all(math.isnan(v) for v in comparison_report.mean_std([None]))
    assert comparison_report.fmt([0.5, 0.7]) == "60.00 ± 14.14" and comparison_report.fmt([0.5]) == "50.00"


def test_the_figure_puts_each_loss_at_its_mean_with_one_standard_deviation(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.axes import Axes

    write_run(tmp_path, "ce_seed0", "ce", 0, val_miou=0.9, test_miou=0.6, test_macc=0.7)
    write_run(tmp_path, "ce_seed1", "ce", 1, val_miou=0.9, test_miou=0.8, test_macc=0.9)
    write_run(tmp_path, "recall_seed0", "recall", 0, val_miou=0.9, test_miou=0.5, test_macc=0.95)
    drawn = []
    errorbar = Axes.errorbar
    monkeypatch.setattr(Axes, "errorbar", lambda self, x, y, **kw: drawn.append((kw["label"], x, y, kw["xerr"], kw["yerr"])) or errorbar(self, x, y, **kw))
    markdown = comparison_report.summarize(tmp_path, compare_losses.in_order(compare_losses.collect(tmp_path, "test"), ["recall", "ce"]), "test")
    spread = 100 * math.sqrt(0.02)
    assert drawn == [("recall (1)", pytest.approx(95.0), pytest.approx(50.0), 0.0, 0.0), ("ce (2)", pytest.approx(80.0), pytest.approx(70.0), pytest.approx(spread), pytest.approx(spread))]
    assert (tmp_path / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "scored on the test split" in markdown and "| ce | 2 | 70.00 ± 14.14 | 80.00 ± 14.14 |" in markdown
    rows = list(csv.DictReader((tmp_path / "comparison.csv").open()))
    assert [(r["loss"], r["split"], r["mIoU"]) for r in rows] == [("recall", "test", "0.5"), ("ce", "test", "0.6"), ("ce", "test", "0.8")]


def test_a_run_scored_after_its_best_checkpoint_is_not_scored_again(tmp_path, monkeypatch):
    write_run(tmp_path, "ce_seed0", "ce", 0, val_miou=0.9, test_miou=0.6, test_macc=0.7)
    (tmp_path / "ce_seed0" / "checkpoints").mkdir()
    best = tmp_path / "ce_seed0" / "checkpoints" / "best.pt"
    best.write_bytes(b"")
    import os

    scores = tmp_path / "ce_seed0" / "eval_test" / "metrics.json"
    calls = []
    monkeypatch.setattr("recallseg.evaluation.score_checkpoint.evaluate_checkpoint", lambda cfg, overrides: calls.append((cfg.checkpoint, list(overrides))))
    os.utime(best, ns=(1, scores.stat().st_mtime_ns - 1))
    compare_losses.score_runs(tmp_path, "test")
    assert calls == []
    os.utime(best, ns=(1, scores.stat().st_mtime_ns + 1))  # a newer best.pt: its scores are stale
    compare_losses.score_runs(tmp_path, "test")
    assert calls == [(str(best), ["dataset.split=test"])]
