"""Real full and read-only disks (a tmpfs mounted for the test; root only, else skipped).

A full disk keeps the previous ``model.onnx`` loadable and leaves no partial prediction; a
read-only one is refused before the model loads; the frame cache on a small disk says how much
it needs in sizes a person reads, and on a read-only one is a warning.
"""

import logging

import cv2
import numpy as np
import pytest

from dataset_trees import make_folder
from disks import fill, leftovers, small_disk
from model_checkpoints import write_checkpoint
from recallseg.commands import export, predict
from recallseg.data.synthetic import CLASSES, SyntheticStreets

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    images = np.stack([SyntheticStreets("val", 64, 96, num_val=2)[i][0] for i in range(2)])
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.pt", CLASSES, ["dataset.height=64", "dataset.width=96"], images=images)


def tiny_onnx_model(path):
    """A valid one-node ONNX model (y = x): the deployed model a failed export must not destroy."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "previous",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )  # fmt: skip
    onnx.save(helper.make_model(graph), str(path))


def test_an_export_onto_a_full_disk_keeps_the_previous_model(checkpoint, tmp_path, capsys):
    onnx = pytest.importorskip("onnx")
    with small_disk(tmp_path / "disk", "1m") as disk:
        output = disk / "model.onnx"
        tiny_onnx_model(output)
        before = output.read_bytes()
        fill(disk)
        assert export.main([f"checkpoint={checkpoint}", f"output={output}", "verify=false"]) == 2
        lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert lines == [f"error: cannot write {output}: the disk is full (the previous model.onnx is unchanged); free space there or choose another location"]
        assert output.read_bytes() == before and leftovers(disk) == []
        onnx.checker.check_model(onnx.load(str(output)))


def test_predict_onto_a_full_disk_leaves_no_partial_png(checkpoint, tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in "abcde":  # overlays of noise: ~18 KB each, more than the disk holds
        cv2.imwrite(str(photos / f"{name}.png"), np.random.default_rng(0).integers(0, 255, (64, 96, 3), dtype=np.uint8))
    with small_disk(tmp_path / "disk", "64k") as disk:
        assert predict.main([f"checkpoint={checkpoint}", f"input={photos}", f"output={disk}", "device=cpu", "formats=[overlay]"]) == 2
        line = [line for line in capsys.readouterr().err.splitlines() if line.strip()][-1]
        assert line.startswith(f"error: cannot write {disk / 'overlay'}/") and ": the disk is full (nothing was written)" in line
        written = sorted(disk.rglob("*.png"))
        assert written and leftovers(disk) == []
        assert all(cv2.imread(str(p)) is not None for p in written)  # every file there is a whole PNG


def test_a_read_only_disk_is_refused_before_the_model_loads(checkpoint, tmp_path, monkeypatch, capsys):
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the output was checked")

    monkeypatch.setattr(export, "CheckpointModel", refuse)
    monkeypatch.setattr(predict, "CheckpointModel", refuse)
    photos = tmp_path / "photos"
    photos.mkdir()
    cv2.imwrite(str(photos / "a.png"), np.zeros((8, 8, 3), np.uint8))
    with small_disk(tmp_path / "disk", "1m", read_only=True) as disk:
        assert predict.main([f"checkpoint={checkpoint}", f"input={photos}", f"output={disk / 'out'}"]) == 2
        assert f"output: {disk / 'out'} cannot be written: the file system is read-only ({disk})" in capsys.readouterr().err
        assert export.main([f"checkpoint={checkpoint}", f"output={disk / 'model.onnx'}"]) == 2
        assert f"output: {disk / 'model.onnx'} cannot be written: the file system is read-only ({disk})" in capsys.readouterr().err


def test_the_frame_cache_on_a_small_or_read_only_disk(tmp_path, caplog):
    from recallseg.errors import ConfigError
    from recallseg.pipeline.builder import build_dataset
    from recallseg.pipeline.cache import CachedDataset

    make_folder(tmp_path / "f", frames={"train": 3}, size=(128, 128))
    cfg = {"_target_": "recallseg.data.folder.FolderDataset", "root": str(tmp_path / "f"), "cache": True}
    with small_disk(tmp_path / "small", "64k") as disk:
        with pytest.raises(ConfigError, match=r"^dataset.cache_dir: the frame cache of 3 frames needs 196.6 KB but .* has \d+\.\d KB free"):
            build_dataset({**cfg, "cache_dir": str(disk)}, "train", transform=None)
    with small_disk(tmp_path / "read_only", "1m", read_only=True) as disk, caplog.at_level(logging.WARNING, "recallseg"):
        dataset = build_dataset({**cfg, "cache_dir": str(disk)}, "train", transform=None)
        assert not isinstance(dataset, CachedDataset) and dataset[0][0].shape == (128, 128, 3)
        assert "frame cache cannot be written" in caplog.text and "Read-only file system" in caplog.text
