import math

import pytest
import torch

from recallseg.evaluation.metrics import ConfusionMatrix, format_table, metrics_from_confusion


def test_confusion_matrix_counts_pixels_and_skips_ignore():
    target = torch.tensor([[0, 0, 1, 255], [2, 1, 1, 0]])
    prediction = torch.tensor([[0, 1, 1, 2], [2, 0, 1, 0]])
    cm = ConfusionMatrix(3, ignore_index=255)
    cm.update(prediction, target)
    expected = torch.tensor([[2, 1, 0], [1, 2, 0], [0, 0, 1]])
    assert torch.equal(cm.compute(), expected)
    cm.update(prediction, target)  # accumulates
    assert torch.equal(cm.compute(), 2 * expected)


def test_metrics_match_hand_computation():
    # rows = ground truth, columns = prediction
    matrix = torch.tensor([[50, 10, 0], [5, 20, 0], [0, 0, 0]])
    m = metrics_from_confusion(matrix, ["a", "b", "c"])
    # class a: TP 50, GT 60, pred 55 -> IoU 50/65, acc 50/60, precision 50/55
    assert m["per_class"]["a"]["iou"] == pytest.approx(50 / 65)
    assert m["per_class"]["a"]["acc"] == pytest.approx(50 / 60)
    assert m["per_class"]["a"]["precision"] == pytest.approx(50 / 55)
    # class b: TP 20, GT 25, pred 30 -> IoU 20/35
    assert m["per_class"]["b"]["iou"] == pytest.approx(20 / 35)
    assert m["per_class"]["b"]["precision"] == pytest.approx(20 / 30)
    # class c is absent from ground truth and prediction: NaN everywhere, left out of the means
    assert math.isnan(m["per_class"]["c"]["iou"]) and math.isnan(m["per_class"]["c"]["acc"])
    assert m["mIoU"] == pytest.approx((50 / 65 + 20 / 35) / 2)
    assert m["mAcc"] == pytest.approx((50 / 60 + 20 / 25) / 2)
    assert m["mPrecision"] == pytest.approx((50 / 55 + 20 / 30) / 2)
    assert m["aAcc"] == pytest.approx(70 / 85)
    assert m["per_class"]["b"]["pixels"] == 25


def test_class_predicted_but_absent_counts_as_zero_iou():
    matrix = torch.tensor([[8, 2], [0, 0]])  # class 1 never in ground truth but predicted twice
    m = metrics_from_confusion(matrix, ["a", "b"])
    assert m["per_class"]["b"]["iou"] == 0.0
    assert math.isnan(m["per_class"]["b"]["acc"])
    assert m["mIoU"] == pytest.approx((0.8 + 0.0) / 2)


def test_table_lists_every_class_and_explains_nan():
    m = metrics_from_confusion(torch.tensor([[3, 1], [0, 0]]), ["road", "unicorn"])
    table = format_table(m)
    assert "road" in table and "unicorn" in table and "n/a" in table and "mIoU" in table


def test_metrics_from_random_predictions_match_sklearn_style_oracle():
    torch.manual_seed(0)
    target = torch.randint(0, 4, (3, 17, 13))
    target[0, :3] = 255
    prediction = torch.randint(0, 4, (3, 17, 13))
    cm = ConfusionMatrix(4)
    cm.update(prediction, target)
    m = metrics_from_confusion(cm.compute(), list("abcd"))
    valid = target != 255
    for c, name in enumerate("abcd"):
        tp = ((prediction == c) & (target == c) & valid).sum().item()
        fp = ((prediction == c) & (target != c) & valid).sum().item()
        fn = ((prediction != c) & (target == c) & valid).sum().item()
        assert m["per_class"][name]["iou"] == pytest.approx(tp / (tp + fp + fn))
        assert m["per_class"][name]["acc"] == pytest.approx(tp / (tp + fn))
