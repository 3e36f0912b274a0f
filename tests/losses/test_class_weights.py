"""Fixed class weights (``losses.class_weights``) against hand-computed cases, in float64."""

import re

import pytest
import torch

from recallseg.errors import ConfigError, DatasetError
from recallseg.losses.class_weights import class_weights_from_counts, effective_number_beta


def normalised(raw):
    """Weights over the present (non-zero) entries scaled to mean 1, absent ones 0."""
    present = [w for w in raw if w]
    mean = sum(present) / len(present)
    return [w / mean for w in raw]


def test_median_frequency_divides_each_count_by_the_labelled_pixels_of_the_images_holding_the_class():
    # Class 1 fills every image it appears in (image pixels == its count): frequency 1.
    counts, image_pixels = [10, 30, 5, 0], [40, 30, 20, 0]
    weights = class_weights_from_counts(counts, "median_frequency", image_pixels=image_pixels)
    freq = [0.25, 1.0, 0.25]  # median 0.25
    expected = normalised([0.25 / f for f in freq] + [0.0])  # [4/3, 1/3, 4/3, 0]
    torch.testing.assert_close(weights.double(), torch.tensor(expected, dtype=torch.float64), rtol=1e-6, atol=0)


def test_effective_number_auto_beta_is_labelled_pixels_minus_one_over_labelled_pixels():
    counts = torch.tensor([3.0, 1.0, 0.0])
    assert effective_number_beta("auto", counts) == 0.75
    weights = class_weights_from_counts(counts, "effective_number", beta="auto")
    expected = normalised([0.25 / (1 - 0.75**3), 0.25 / (1 - 0.75), 0.0])
    torch.testing.assert_close(weights.double(), torch.tensor(expected, dtype=torch.float64), rtol=1e-6, atol=0)


def test_effective_number_with_a_small_beta_follows_the_formula():
    weights = class_weights_from_counts([1, 2, 0], "effective_number", beta=0.3)
    expected = normalised([0.7 / (1 - 0.3), 0.7 / (1 - 0.3**2), 0.0])
    torch.testing.assert_close(weights.double(), torch.tensor(expected, dtype=torch.float64), rtol=1e-6, atol=0)


def test_effective_number_with_beta_zero_weighs_every_present_class_one():
    assert class_weights_from_counts([1, 2, 0], "effective_number", beta=0.0).tolist() == [1.0, 1.0, 0.0]


@pytest.mark.parametrize("beta", [1.0, -0.1])
def test_effective_number_beta_outside_zero_to_one_is_refused(beta):
    with pytest.raises(ConfigError, match=f"^{re.escape(f'loss.beta: must be in [0, 1) or {chr(39)}auto{chr(39)}, got {beta}')}$"):
        class_weights_from_counts([1, 2], "effective_number", beta=beta)


@pytest.mark.parametrize("counts", [[5, -1], [[5, 1]]])
def test_counts_that_are_not_a_list_of_non_negative_numbers_are_refused(counts):
    shown = torch.tensor(counts, dtype=torch.float64).tolist()
    message = f"class pixel counts must be a 1-D list of non-negative numbers, got {shown}; recompute the class statistics"
    with pytest.raises(DatasetError, match=f"^{re.escape(message)}$"):
        class_weights_from_counts(counts, "inverse")
