"""The model's input pipeline (evaluation/model_input.py): read from a checkpoint's stored config as
data, and one resize for the frames a dataset loads, the images predict reads and the exported graph."""

import cv2
import numpy as np
import pytest
import torch

from dataset_trees import make_folder
from recallseg.data.files import read_image
from recallseg.data.folder import FolderDataset
from recallseg.data.resize import resize_image
from recallseg.errors import ConfigError
from recallseg.evaluation.model_input import ModelInput, Segmenter
from recallseg.runtime.device import Runtime

CPU = Runtime(torch.device("cpu"), None, False)
STORED = {
    "dataset": {"resize": [64, 96], "val_transform": None, "ignore_index": 255},
    "model": {"mean": [0.4, 0.5, 0.6], "std": [0.2, 0.25, 0.3], "channel_order": "bgr"},
    "inference": {"size_multiple": 64},
    "evaluation": {"full_resolution": False},
}


def test_the_stored_config_defines_the_pipeline_and_options_add_to_it():
    model_input = ModelInput.from_config(STORED)
    assert model_input.resize == (64, 96) and model_input.size_multiple == 64 and not model_input.full_resolution
    assert (model_input.mean, model_input.std, model_input.channel_order) == ((0.4, 0.5, 0.6), (0.2, 0.25, 0.3), "bgr")
    assert model_input.settings().size_multiple == 64
    assert model_input.settings({"flip": True, "size_multiple": None}).size_multiple == 64  # eval.yaml's null: the checkpoint's
    assert model_input.settings({"flip": True, "size_multiple": None}).flip
    assert model_input.settings({"size_multiple": 32}).size_multiple == 32
    bare = ModelInput.from_config({"dataset": {}, "model": {}})  # an older checkpoint: ImageNet statistics, no resize, 32
    assert bare.resize is None and bare.size_multiple == 32 and bare.full_resolution and bare.mean == (0.485, 0.456, 0.406)


@pytest.mark.parametrize(
    "section, value, key",
    [("dataset", {"resize": [64]}, "dataset.resize"), ("dataset", {"resize": "${oc.env:HOME}"}, "dataset.resize"),
     ("dataset", {"resize": [64, -96]}, "dataset.resize"), ("inference", {"size_multiple": 0}, "inference.size_multiple")],
)  # fmt: skip
def test_a_stored_value_the_pipeline_cannot_take_is_refused_naming_its_key(section, value, key):
    with pytest.raises(ConfigError) as raised:
        ModelInput.from_config({**STORED, section: value})
    assert str(raised.value).startswith(key)


def test_a_dataset_resizes_its_frames_as_the_pipeline_resizes_an_image(tmp_path):
    """FolderDataset(resize=...) frames are data.resize's, which is what predict's frame step and the
    exported graph's Segmenter(resize=...) do to the image file."""
    make_folder(tmp_path, frames={"val": 1}, size=(45, 70))
    native = read_image(tmp_path / "images" / "val" / "val_000.png")
    loaded, _ = FolderDataset(tmp_path, "val", resize=(64, 96)).load(0)
    np.testing.assert_array_equal(loaded, resize_image(native, (64, 96)))
    np.testing.assert_array_equal(ModelInput.from_config(STORED).frame_transform()(native), loaded)
    by_opencv = cv2.resize(native, (96, 64), interpolation=cv2.INTER_LINEAR)
    assert np.abs(by_opencv.astype(int) - loaded).max() <= 1  # the sampling OpenCV's INTER_LINEAR uses, rounded once


def test_the_graphs_resize_is_the_frame_step_and_the_logits_come_at_the_images_size():
    model_input = ModelInput.from_config(STORED)
    network = torch.nn.Conv2d(3, 4, 1)
    image = np.random.default_rng(0).integers(0, 256, (45, 70, 3), dtype=np.uint8)
    with torch.no_grad():
        in_graph = Segmenter.for_checkpoint(network, model_input, CPU, model_input.settings(), resize=True)(torch.from_numpy(image)[None])
        frame = torch.from_numpy(model_input.frame_transform()(image))[None]
        stepwise = Segmenter.for_checkpoint(network, model_input, CPU, model_input.settings())(frame, (45, 70))
        unresized = Segmenter.for_checkpoint(network, model_input, CPU, model_input.settings())(torch.from_numpy(image)[None])
    assert in_graph.shape == (1, 4, 45, 70)
    torch.testing.assert_close(in_graph, stepwise, rtol=0, atol=0)
    assert not torch.allclose(in_graph, unresized)
