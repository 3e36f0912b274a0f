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


def test_every_metric_of_an_empty_confusion_matrix_is_nan():
    """No pixel scored (an empty split, or every pixel ignored): nothing to average, not 0% accuracy."""
    cm = ConfusionMatrix(3, ignore_index=255)
    cm.update(torch.tensor([[0, 1, 2]]), torch.tensor([[255, 255, 255]]))
    m = metrics_from_confusion(cm.compute(), ["a", "b", "c"])
    assert torch.count_nonzero(cm.compute()) == 0
    assert [math.isnan(m[key]) for key in ("mIoU", "mAcc", "aAcc", "mPrecision")] == [True] * 4
    for row in m["per_class"].values():
        assert math.isnan(row["iou"]) and math.isnan(row["acc"]) and math.isnan(row["precision"]) and row["pixels"] == 0
    assert "mIoU n/a  mAcc n/a  aAcc n/a  mPrecision n/a" in format_table(m)


def test_pixels_labelled_with_a_negative_ignore_index_are_not_scored():
    target = torch.tensor([[0, -1, 1, -1], [2, 1, -1, 0]], dtype=torch.int16)  # int16: the mask dtype for ignore_index -1
    prediction = torch.tensor([[0, 2, 1, 0], [1, 1, 2, 2]])
    cm = ConfusionMatrix(3, ignore_index=-1)
    cm.update(prediction, target)
    assert cm.compute().tolist() == [[1, 0, 1], [0, 2, 0], [0, 1, 0]]
    assert metrics_from_confusion(cm.compute(), list("abc"))["aAcc"] == 3 / 5


def test_evaluation_leaves_out_pixels_of_a_negative_ignore_index():
    """engine.evaluation with ignore_index=-1: only the labelled pixels enter the matrix."""
    from recallseg.evaluation.loop import evaluate
    from recallseg.runtime.device import Runtime
    from recallseg.runtime.normalize import Normalizer

    class Fixed(torch.nn.Module):  # predicts class 1 everywhere
        def forward(self, x):
            return torch.stack([torch.zeros_like(x[:, 0]), torch.ones_like(x[:, 0]), torch.zeros_like(x[:, 0])], 1)

    runtime = Runtime(torch.device("cpu"), None, False)
    masks = torch.full((2, 32, 32), -1, dtype=torch.int16)
    masks[0, :4] = 1  # 128 pixels of class 1, predicted right
    masks[1, :2] = 2  # 64 pixels of class 2, predicted as 1
    images = torch.zeros(2, 32, 32, 3, dtype=torch.uint8)
    matrix = evaluate(Fixed(), [(images, masks)], Normalizer([0.5] * 3, [0.5] * 3, runtime), runtime, 3, -1, progress=False)
    assert matrix.compute().tolist() == [[0, 0, 0], [0, 128, 0], [0, 64, 0]]


def test_a_prediction_outside_the_classes_never_spills_into_the_next_row():
    """A prediction of C at a pixel of class 0 once landed in cell (1, 0); now compute() refuses it."""
    cm = ConfusionMatrix(3, ignore_index=255)
    cm.update(torch.tensor([[3, 0, 1]]), torch.tensor([[0, 0, 1]]))
    with pytest.raises(ValueError, match=r"0 target pixel\(s\) .* and 1 scored pixel\(s\) predicted outside 0..2"):
        cm.compute()
    assert cm.matrix.tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 0]]  # the valid pixels, nothing in row 1 for the bad one


def test_the_ignore_index_is_honoured_and_other_unknown_targets_are_refused():
    cm = ConfusionMatrix(3, ignore_index=7)
    cm.update(torch.tensor([[9, 0, 1]]), torch.tensor([[7, 0, 1]]))  # a bad prediction where the target is ignored: not scored
    assert cm.compute().tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 0]]
    cm.update(torch.tensor([[0]]), torch.tensor([[255]]))  # 255 is not this matrix's ignore index
    with pytest.raises(ValueError, match=r"1 target pixel\(s\) neither a class id \(0..2\) nor the ignore index 7"):
        cm.compute()
    with pytest.raises(ValueError, match="ignore_index 1 is also a class id"):
        ConfusionMatrix(3, ignore_index=1)


def test_table_shows_percent_with_two_decimals_and_n_a_for_nan():
    # road: TP 3, GT 4, predicted 3; unicorn: predicted once, never in the ground truth; void: absent from both.
    m = metrics_from_confusion(torch.tensor([[3, 1, 0], [0, 0, 0], [0, 0, 0]]), ["road", "unicorn", "void"])
    assert format_table(m).splitlines() == [
        "class        IoU      Acc     Prec        pixels",
        "road       75.00    75.00   100.00             4",
        "unicorn     0.00      n/a     0.00             0",
        "void         n/a      n/a      n/a             0",
        "------------------------------------------------",
        "mIoU 37.50  mAcc 75.00  aAcc 75.00  mPrecision 50.00  (percent)",
        "n/a: class absent from both ground truth and prediction (or never predicted, for Prec); left out of the means",
    ]
