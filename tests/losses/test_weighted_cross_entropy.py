"""Weighted cross entropy's sources of weights: a list, a weights file, the training statistics."""

import pytest
import torch

from recallseg.losses import LossContext, build_loss
from recallseg.losses.weighted_cross_entropy import read_weights_file
from recallseg.pipeline.class_statistics import ClassStatistics

WEIGHTS = [1.0, 2.0, 0.5, 3.0]


@pytest.mark.parametrize(
    "text",
    ["[1, 2, 0.5, 3]", '{"weights": [1, 2, 0.5, 3]}', "1, 2, 0.5, 3", "1\n2\n0.5\n3\n", "1,2,0.5,3"],
    ids=["json_list", "json_object", "commas_and_spaces", "lines", "commas"],
)
def test_a_weights_file_is_a_json_list_a_json_object_with_weights_or_numbers_between_commas_or_blanks(tmp_path, text):
    path = tmp_path / "weights.txt"
    path.write_text(text)
    assert read_weights_file(path) == WEIGHTS
    loss = build_loss({"name": "weighted_ce", "weights_file": str(path)}, LossContext(num_classes=4))
    assert loss.weights.tolist() == WEIGHTS


def test_loss_weights_win_over_a_weights_file(tmp_path):
    path = tmp_path / "weights.json"
    path.write_text("[9, 9, 9, 9]")
    loss = build_loss({"name": "weighted_ce", "weights": WEIGHTS, "weights_file": str(path)}, LossContext(num_classes=4))
    assert loss.weights.tolist() == WEIGHTS


def test_median_frequency_weights_come_from_the_image_pixels_of_the_training_statistics():
    # freq = n_c / P_c = [0.25, 1.0, 0.25], median 0.25: raw [1, 0.25, 1], normalised to mean 1 over present classes.
    statistics = ClassStatistics(torch.tensor([10, 30, 5, 0]), torch.tensor([40, 30, 20, 0]))
    context = LossContext(num_classes=4, class_statistics=lambda: statistics)
    loss = build_loss({"name": "weighted_ce", "mode": "median_frequency"}, context)
    torch.testing.assert_close(loss.weights.double(), torch.tensor([4 / 3, 1 / 3, 4 / 3, 0.0], dtype=torch.float64), rtol=1e-6, atol=0)
