"""The per-class heatmaps in TensorBoard (recall loss's weights and batch recall): large enough to
read, a named row per class and the iterations on the x axis, drawn at validations."""

import numpy as np
import pytest
import torch

from recallseg.training.log import PerClassHistory, TrainingLogger
from recallseg.training.tensorboard_images import per_class_heatmap

CLASSES = ["road", "sidewalk", "building", "sky", "vegetation", "car", "pedestrian", "traffic sign", "pole"]


class Writer:
    def __init__(self):
        self.images = []

    def add_scalar(self, *args, **kwargs):
        pass

    def add_image(self, tag, image, step, dataformats):
        self.images.append((tag, image, step))


class Bar:
    def set_postfix(self, **kwargs):
        pass


def test_a_heatmap_is_large_enough_to_read_and_names_its_classes():
    values = np.random.default_rng(0).random((len(CLASSES), 5))
    image = per_class_heatmap(values, CLASSES, [20, 40, 60, 80, 100], "recall_weight per class")
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert image.shape[0] >= 300 and image.shape[1] >= 600  # was 72x20 pixels
    unnamed = per_class_heatmap(values, [""] * len(CLASSES), [20, 40, 60, 80, 100], "recall_weight per class")
    assert text_pixels(image) > text_pixels(unnamed) + 300  # the names are written


def text_pixels(image: np.ndarray) -> int:
    """Dark grey pixels: text and axes (viridis has no grey)."""
    return int(((image.max(axis=2) < 100) & (np.ptp(image, axis=2) < 10)).sum())


def test_the_heatmaps_are_drawn_at_validations_from_every_logged_window():
    writer = Writer()
    logger = TrainingLogger(writer, CLASSES, 100, Bar())
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    for iteration in (20, 40, 60):
        logger.log(iteration, 1.0, 5.0, 0, optimizer, {"recall_weight": torch.rand(len(CLASSES))})
    assert writer.images == []  # not at every log line
    logger.log_heatmaps(60)
    ((tag, image, step),) = writer.images
    assert tag == "train/recall_weight_heatmap" and step == 60 and image.shape[1] >= 600
    assert logger.histories["recall_weight"].iterations == [20, 40, 60]


def test_a_long_history_drops_old_columns_with_their_iterations():
    history = PerClassHistory(CLASSES, max_columns=4)
    for iteration in range(1, 11):
        history.append(torch.full((len(CLASSES),), iteration / 10), iteration)
    assert len(history.columns) == len(history.iterations) <= 4
    assert [float(column[0]) for column in history.columns] == pytest.approx([i / 10 for i in history.iterations])
