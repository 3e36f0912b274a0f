"""recallseg-export: the ONNX file, run by onnxruntime at another size than training's, gives
what recallseg's own PyTorch inference gives."""

import numpy as np
import pytest
import torch

from conftest import run_entry_point
from model_checkpoints import write_checkpoint
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


def test_raw_input_export_matches_pytorch_at_another_size(checkpoint, frames, tmp_path, capsys):
    from recallseg.commands.export import main, onnx_outputs

    logits_file, labels_file = tmp_path / "logits.onnx", tmp_path / "labels.onnx"
    assert main([f"checkpoint={checkpoint}", f"output={logits_file}", "raw_input=true"]) == 0
    out = capsys.readouterr().out
    assert "opset 17" in out and "max |logit difference|" in out
    assert main([f"checkpoint={checkpoint}", f"output={labels_file}", "raw_input=true", "argmax=true", "verify=false"]) == 0
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

    mean, std = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]
    runtime = Runtime(torch.device("cpu"), None, False)
    for order in ("rgb", "bgr"):
        deployed = DeployedNetwork(torch.nn.Identity(), mean, std, order, raw_input=True)
        expected = Normalizer(mean, std, runtime, order)(frames)
        assert torch.allclose(deployed(frames), expected, atol=1e-5), order
    by_hand = (frames.permute(0, 3, 1, 2).double().flip(1) / 255 - torch.tensor(mean).double().view(1, 3, 1, 1)) / torch.tensor(std).double().view(1, 3, 1, 1)
    assert torch.allclose(Normalizer(mean, std, runtime, "bgr")(frames).double(), by_hand, atol=1e-4)
