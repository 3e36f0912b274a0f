"""recallseg-export: the ONNX file, run by onnxruntime at another size than training's, gives
what recallseg's own PyTorch inference gives; with ``dataset.resize``, evaluate.py, recallseg-predict
and the ONNX model give one mask."""

import contextlib
import io
import json

import cv2
import numpy as np
import pytest
import torch

from conftest import CONFIG_DIR, run_entry_point
from dataset_trees import make_folder
from model_checkpoints import composed_config, write_checkpoint
from recallseg.checkpoints.format import load_checkpoint, save_checkpoint
from recallseg.data.synthetic import CLASSES, SyntheticStreets

onnxruntime = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

LOGIT_TOLERANCE = 1e-4  # float32 through two runtimes; measured max |diff| ~4e-5 on this model
ARGMAX_AGREEMENT = 0.999


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    images = np.stack([SyntheticStreets("val", 64, 96, num_val=2)[i][0] for i in range(2)])
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "best.pt", CLASSES, ["dataset.height=64", "dataset.width=96"], images=images)


@pytest.fixture(scope="module")
def frames():
    """Two uint8 RGB street frames at 96x160, not the 64x96 the checkpoint was made for."""
    return torch.from_numpy(np.stack([SyntheticStreets("val", 96, 160, num_val=2, seed=3)[i][0] for i in range(2)]))


def torch_logits(checkpoint, frames):
    """recallseg's own path: the checkpoint's model after runtime.Normalizer."""
    from recallseg.runtime.normalize import Normalizer
    from recallseg.checkpoints import CheckpointModel

    loaded = CheckpointModel(checkpoint, "cpu", "off")
    with torch.no_grad():
        return loaded.model(Normalizer(loaded.mean, loaded.std, loaded.runtime, loaded.channel_order)(frames)).numpy()


@pytest.fixture(scope="module")
def raw_exports(checkpoint, tmp_path_factory):
    """``(logits.onnx, labels.onnx, what the first export printed)``, both with raw_input=true."""
    from recallseg.commands.export import main

    folder = tmp_path_factory.mktemp("onnx")
    logits_file, labels_file = folder / "logits.onnx", folder / "labels.onnx"
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        assert main([f"checkpoint={checkpoint}", f"output={logits_file}", "raw_input=true"]) == 0
    assert main([f"checkpoint={checkpoint}", f"output={labels_file}", "raw_input=true", "argmax=true", "verify=false"]) == 0
    return logits_file, labels_file, printed.getvalue()


def test_raw_input_export_matches_pytorch_at_another_size(checkpoint, frames, raw_exports):
    from recallseg.commands.export import onnx_outputs

    logits_file, labels_file, out = raw_exports
    assert "opset 17" in out and "max |logit difference|" in out
    expected = torch_logits(checkpoint, frames)
    logits = onnx_outputs(logits_file, frames)
    assert logits.shape == expected.shape == (2, len(CLASSES), 96, 160)
    difference = float(np.abs(logits - expected).max())
    assert difference < LOGIT_TOLERANCE, difference
    labels = onnx_outputs(labels_file, frames)
    assert labels.shape == (2, 96, 160) and labels.dtype == np.int64
    agreement = float((labels == expected.argmax(1)).mean())
    assert agreement >= ARGMAX_AGREEMENT, agreement
    assert len(np.unique(labels)) > 2  # a model predicting one class would agree trivially
    print(f"onnxruntime {onnxruntime.__version__}: max |logit diff| {difference:.2e}, argmax agreement {agreement:.5f} at 2x96x160")


def test_an_odd_size_is_padded_inside_the_graph_and_cropped_back(checkpoint, raw_exports):
    """237x301 is no multiple of the network's stride: the graph pads it to 256x320 (inference.size_multiple,
    32) as evaluation does, and returns logits and labels of 237x301."""
    from recallseg.checkpoints import CheckpointModel
    from recallseg.commands.export import onnx_outputs
    from recallseg.evaluation.inference import whole_logits

    logits_file, labels_file, _ = raw_exports
    frame = torch.from_numpy(SyntheticStreets("val", 237, 301, num_val=1, seed=5)[0][0])[None]
    loaded = CheckpointModel(checkpoint, "cpu", "off")
    with torch.no_grad():
        expected = whole_logits(loaded.model, loaded.normalizer(frame), 32).numpy()
    logits, labels = onnx_outputs(logits_file, frame), onnx_outputs(labels_file, frame)
    assert logits.shape == expected.shape == (1, len(CLASSES), 237, 301) and labels.shape == (1, 237, 301)
    assert float(np.abs(logits - expected).max()) < LOGIT_TOLERANCE
    assert float((labels == expected.argmax(1)).mean()) >= ARGMAX_AGREEMENT


@pytest.fixture(scope="module")
def resized_checkpoint(checkpoint, tmp_path_factory):
    """The module's checkpoint as if it had been trained on a folder dataset with ``dataset.resize=[64,96]``
    and validated with ``inference.size_multiple=64``, and that dataset: one 45x70 val frame."""
    folder = tmp_path_factory.mktemp("resized")
    make_folder(folder / "data", frames={"val": 1}, size=(45, 70), seed=2)
    (folder / "data" / "classes.yaml").write_text(f"classes: {list(CLASSES)}\n")
    state = load_checkpoint(checkpoint)
    dataset = composed_config(["dataset=folder", f"dataset.root={folder / 'data'}", "dataset.resize=[64,96]", "dataset.cache=false"])["dataset"]
    inference = {**state["config"]["inference"], "size_multiple": 64}
    save_checkpoint({**state, "config": {**state["config"], "dataset": dataset, "inference": inference}}, folder / "resized.pt")
    return folder / "resized.pt", folder / "data" / "images" / "val" / "val_000.png"


def test_evaluate_predict_and_onnx_give_one_mask_when_validation_resized(resized_checkpoint, tmp_path):
    """One 45x70 frame, validation resized to 64x96: evaluate.py's saved prediction, recallseg-predict's
    mask and the raw_input ONNX model's labels are one mask, at the frame's own 45x70, padded as validation padded."""
    from hydra import compose, initialize_config_dir

    from recallseg.commands import predict
    from recallseg.commands.export import main, onnx_outputs
    from recallseg.evaluation.score_checkpoint import evaluate_checkpoint

    checkpoint, image_file = resized_checkpoint
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        eval_cfg = compose("eval", overrides=[f"checkpoint={checkpoint}", f"output_dir={tmp_path / 'eval'}", "predictions.save=true", "predictions.format=index"])
    evaluate_checkpoint(eval_cfg)
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["inference"]["size_multiple"] == 64
    evaluated = cv2.imread(str(tmp_path / "eval" / "predictions" / "val_000.png"), cv2.IMREAD_UNCHANGED)
    assert predict.main([f"checkpoint={checkpoint}", f"input={image_file}", f"output={tmp_path / 'predict'}", "formats=[index]", "device=cpu"]) == 0
    predicted = cv2.imread(str(tmp_path / "predict" / "index" / "val_000.png"), cv2.IMREAD_UNCHANGED)
    assert main([f"checkpoint={checkpoint}", f"output={tmp_path / 'labels.onnx'}", "raw_input=true", "argmax=true", "verify=false"]) == 0
    image = cv2.imread(str(image_file))[:, :, ::-1]
    exported = onnx_outputs(tmp_path / "labels.onnx", torch.from_numpy(np.ascontiguousarray(image))[None])[0]
    assert evaluated.shape == predicted.shape == exported.shape == (45, 70)
    assert len(np.unique(predicted)) > 1  # a model predicting one class would agree trivially
    np.testing.assert_array_equal(predicted, evaluated)
    np.testing.assert_array_equal(exported, predicted)


@pytest.mark.slow
def test_float_input_export_is_the_bare_network(checkpoint, frames, tmp_path):
    """Also the command as a user runs it, from another directory."""
    from recallseg.runtime.device import Runtime
    from recallseg.runtime.normalize import Normalizer
    from recallseg.commands.export import onnx_outputs

    run_entry_point("scripts/export.py", f"checkpoint={checkpoint}", "output=net.onnx", "verify=false", cwd=tmp_path)
    output = tmp_path / "net.onnx"
    x = Normalizer([0.485, 0.456, 0.406], [0.229, 0.224, 0.225], Runtime(torch.device("cpu"), None, False))(frames[:1])
    assert np.abs(onnx_outputs(output, x) - torch_logits(checkpoint, frames[:1])).max() < LOGIT_TOLERANCE


def test_bad_arguments_are_one_line(checkpoint, tmp_path, capsys):
    from recallseg.commands.export import main

    assert main([f"checkpoint={tmp_path / 'none.pt'}", f"output={tmp_path / 'm.onnx'}"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main([f"checkpoint={checkpoint}", f"output={tmp_path / 'm.onnx'}", "opsett=18"]) == 2
    assert "did you mean opset?" in capsys.readouterr().err
    assert main([f"checkpoint={checkpoint}", f"output={tmp_path / 'm.txt'}"]) == 2
    assert "must end in .onnx" in capsys.readouterr().err


def test_the_baked_input_step_is_recallsegs_for_either_channel_order(frames):
    """DeployedNetwork(raw_input) == runtime.Normalizer, also for a network trained on BGR."""
    from recallseg.runtime.device import Runtime
    from recallseg.runtime.normalize import Normalizer
    from recallseg.commands.export import DeployedNetwork
    from recallseg.evaluation.model_input import ModelInput

    mean, std = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]
    runtime = Runtime(torch.device("cpu"), None, False)
    for order in ("rgb", "bgr"):
        model_input = ModelInput.from_config({"model": {"mean": mean, "std": std, "channel_order": order}})
        deployed = DeployedNetwork(torch.nn.Identity(), model_input, raw_input=True)
        expected = Normalizer(mean, std, runtime, order)(frames)
        assert torch.allclose(deployed(frames), expected, atol=1e-5), order
    by_hand = (frames.permute(0, 3, 1, 2).double().flip(1) / 255 - torch.tensor(mean).double().view(1, 3, 1, 1)) / torch.tensor(std).double().view(1, 3, 1, 1)
    assert torch.allclose(Normalizer(mean, std, runtime, "bgr")(frames).double(), by_hand, atol=1e-4)
