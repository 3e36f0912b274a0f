"""evaluate.py's outputs: the report files, saved predictions, and agreement with the official
Cityscapes evaluator on the same predictions."""

import copy
import csv
import math

import cv2
import numpy as np
import pytest
import torch

from conftest import CONFIG_DIR, read_json, run_entry_point
from dataset_trees import make_cityscapes
from model_checkpoints import write_checkpoint
from recallseg.data.cityscapes import CLASSES as CITYSCAPES_CLASSES
from recallseg.data.cityscapes import TRAIN_ID_TO_LABEL_ID
from recallseg.data.synthetic import CLASSES as SYNTHETIC_CLASSES
from recallseg.data.synthetic import SyntheticStreets

SYNTHETIC = ["dataset.height=64", "dataset.width=96", "dataset.num_val=3"]


def evaluate_in_process(out, *overrides):
    """evaluate.py's work without a subprocess: compose configs/eval.yaml and call evaluate_checkpoint."""
    from hydra import compose, initialize_config_dir

    from recallseg.evaluation.score_checkpoint import evaluate_checkpoint

    from recallseg.commands.evaluate import split_eval_arguments

    own, stored = split_eval_arguments([f"output_dir={out}", *overrides])
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("eval", overrides=own)
    return evaluate_checkpoint(cfg, stored)


@pytest.fixture(scope="module")
def synthetic_checkpoint(tmp_path_factory):
    images = np.stack([SyntheticStreets("val", 64, 96, num_val=3)[i][0] for i in range(3)])
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "synthetic.pt", SYNTHETIC_CLASSES, SYNTHETIC, images=images)


@pytest.mark.slow
def test_report_files_and_inference_settings(synthetic_checkpoint, tmp_path):
    result = run_entry_point(
        "evaluate.py", f"checkpoint={synthetic_checkpoint}", f"hydra.run.dir={tmp_path}",
        "inference.mode=slide", "inference.crop_size=[32,64]", "inference.stride=[16,32]", "inference.flip=true",
        "evaluation.batch_size=2", "predictions.save=true", "predictions.format=overlay",
    )  # fmt: skip
    metrics = read_json(tmp_path / "metrics.json")
    assert set(metrics) >= {"mIoU", "mAcc", "aAcc", "mPrecision", "per_class", "iteration", "checkpoint", "split", "inference"}
    assert metrics["iteration"] == 7 and metrics["split"] == "val"
    assert metrics["inference"]["mode"] == "slide" and metrics["inference"]["crop_size"] == [32, 64] and metrics["inference"]["flip"] is True
    rows = list(csv.DictReader(open(tmp_path / "per_class.csv")))
    assert [row["class"] for row in rows] == list(SYNTHETIC_CLASSES)
    for row in rows:
        iou = metrics["per_class"][row["class"]]["iou"]
        assert (row["iou"] == "" and iou is None) or float(row["iou"]) == pytest.approx(iou, abs=1e-6)
        assert int(row["pixels"]) == metrics["per_class"][row["class"]]["pixels"]
    picture = cv2.imread(str(tmp_path / "confusion_matrix.png"))
    assert picture is not None and picture.shape[0] > 200
    assert "pedestrian" in result.stdout and "mIoU" in result.stdout  # the printed table
    overlays = sorted((tmp_path / "predictions").glob("*.png"))
    assert [p.name for p in overlays] == ["000000.png", "000001.png", "000002.png"]
    assert cv2.imread(str(overlays[0])).shape == (64, 96, 3)


@pytest.mark.slow
def test_whole_and_slide_agree_when_one_window_covers_the_image(synthetic_checkpoint, tmp_path):
    common = [f"checkpoint={synthetic_checkpoint}", "predictions.save=true", "predictions.format=index"]
    whole = evaluate_in_process(tmp_path / "whole", *common)
    slide = evaluate_in_process(tmp_path / "slide", *common, "inference.mode=slide", "inference.crop_size=[64,96]", "inference.stride=[64,96]")
    assert whole["per_class"] == slide["per_class"]
    for name in ("000000.png", "000001.png"):
        a = cv2.imread(str(tmp_path / "whole" / "predictions" / name), cv2.IMREAD_UNCHANGED)
        b = cv2.imread(str(tmp_path / "slide" / "predictions" / name), cv2.IMREAD_UNCHANGED)
        assert a.shape == (64, 96) and np.array_equal(a, b) and a.max() < len(SYNTHETIC_CLASSES)


def test_train_ids_map_to_the_official_label_ids():
    from cityscapesscripts.helpers.labels import trainId2label

    assert [trainId2label[t].id for t in range(19)] == TRAIN_ID_TO_LABEL_ID.tolist()
    assert [trainId2label[t].name for t in range(19)] == list(CITYSCAPES_CLASSES)


def official_scores(predictions, gt_root):
    """cityscapesscripts' evalPixelLevelSemanticLabeling on ``predictions`` against gtFine/val (no files written)."""
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as official

    args = copy.copy(official.args)
    args.predictionPath, args.predictionWalk = str(predictions), None
    args.evalInstLevelScore = False  # needs _instanceIds.png files, which the tiny tree lacks
    args.JSONOutput, args.quiet, args.colorized = False, True, False
    ground_truth = sorted(str(p) for p in (gt_root / "gtFine" / "val").glob("*/*_gtFine_labelIds.png"))
    found = [official.getPrediction(args, gt) for gt in ground_truth]  # matches files as the CLI does
    return official.evaluateImgLists(found, ground_truth, args)


@pytest.mark.slow
def test_cityscapes_export_scores_the_same_with_the_official_evaluator(tmp_path):
    # Frames of 64x128, loaded resized to 32x64 (dataset.resize): recallseg must score, and
    # export, at the label files' full resolution, as the official evaluator does.
    root = tmp_path / "cityscapes"
    written = make_cityscapes(root, frames={"val": 3, "test": 2}, size=(64, 128), seed=1)
    small = np.stack([cv2.resize(cv2.imread(str(p))[:, :, ::-1], (64, 32), interpolation=cv2.INTER_LINEAR) for p, _ in written["val"]])
    checkpoint = write_checkpoint(
        tmp_path / "cityscapes.pt", CITYSCAPES_CLASSES, ["dataset=cityscapes", f"dataset.root={root}", "dataset.resize=[32,64]"], images=small
    )
    out = tmp_path / "eval"
    run_entry_point("evaluate.py", f"checkpoint={checkpoint}", f"hydra.run.dir={out}", "predictions.save=true", "predictions.format=cityscapes")
    metrics = read_json(out / "metrics.json")
    files = sorted((out / "predictions").rglob("*.png"))
    assert [f.name for f in files] == [p.name for p, _ in written["val"]]  # CITY_SEQ_FRAME_leftImg8bit.png
    exported = cv2.imread(str(files[0]), cv2.IMREAD_UNCHANGED)
    assert exported.shape == (64, 128) and set(np.unique(exported)) <= set(TRAIN_ID_TO_LABEL_ID.tolist())
    assert len(np.unique(exported)) >= 3  # the calibrated model predicts a mix of classes

    official = official_scores(out / "predictions", root)
    ours = {name: row["iou"] for name, row in metrics["per_class"].items()}
    for name, score in official["classScores"].items():
        if name in ours:  # the 19 evaluated classes; the official list also has the ignored ones (NaN)
            assert (math.isnan(score) and ours[name] is None) or score == pytest.approx(ours[name], abs=1e-9), name
        else:
            assert math.isnan(score), name
    # Both average over the classes whose IoU is defined (NaN: no ground truth and never predicted).
    assert official["averageScoreClasses"] == pytest.approx(metrics["mIoU"], abs=1e-9)

    # The test split has no public labels: predictions are still exported, at full resolution.
    test_out = tmp_path / "test"
    evaluate_in_process(test_out, f"checkpoint={checkpoint}", "dataset.split=test", "predictions.save=true", "predictions.format=cityscapes")
    exported = sorted((test_out / "predictions").rglob("*.png"))
    assert [f.name for f in exported] == [p.name for p, _ in written["test"]]
    assert all(cv2.imread(str(f), cv2.IMREAD_UNCHANGED).shape == (64, 128) for f in exported)


def test_a_non_recallseg_checkpoint_gets_a_clear_error(tmp_path):
    from recallseg.checkpoints.format import CheckpointError

    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, foreign)
    with pytest.raises(CheckpointError, match=f"{foreign} is not a recallseg checkpoint"):
        evaluate_in_process(tmp_path / "out", f"checkpoint={foreign}")


def test_a_truncated_checkpoint_gets_a_clear_error(synthetic_checkpoint, tmp_path):
    from recallseg.checkpoints.format import CheckpointError

    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(synthetic_checkpoint.read_bytes()[:100_000])
    with pytest.raises(CheckpointError, match="corrupt, truncated or not a PyTorch file"):
        evaluate_in_process(tmp_path / "out", f"checkpoint={truncated}")


def test_cityscapes_format_needs_cityscapes_classes(synthetic_checkpoint, tmp_path):
    with pytest.raises(ValueError, match="19 Cityscapes classes"):
        evaluate_in_process(tmp_path, f"checkpoint={synthetic_checkpoint}", "predictions.save=true", "predictions.format=cityscapes")
