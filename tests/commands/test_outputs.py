"""What recallseg-export and recallseg-predict write, and where they refuse to.

Each output file is written whole or not at all: a disk that fills keeps the previous
``model.onnx`` and leaves no partial PNG, and the failure is one line naming the file (exit 2).
An output that is a file, cannot be written or lies over the input is refused before the model
loads. An image OpenCV refuses is skipped and named. Real full and read-only disks:
test_full_disk.py.
"""

import errno
import tempfile

import cv2
import numpy as np
import pytest
import torch

from disks import leftovers, writes_fail_beyond
from model_checkpoints import write_checkpoint
from recallseg.commands import export, predict
from recallseg.data.synthetic import CLASSES, SyntheticStreets


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    images = np.stack([SyntheticStreets("val", 64, 96, num_val=2)[i][0] for i in range(2)])
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.pt", CLASSES, ["dataset.height=64", "dataset.width=96"], images=images)


@pytest.fixture
def never_loads(monkeypatch):
    """Fail the test if a command gets as far as loading the model."""

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the output was checked")

    monkeypatch.setattr(export, "CheckpointModel", refuse)
    monkeypatch.setattr(predict, "CheckpointModel", refuse)


def one_error_line(capsys) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def test_an_export_that_fails_for_space_keeps_the_previous_model_onnx(checkpoint, tmp_path, monkeypatch, capsys):
    pytest.importorskip("onnx")
    output = tmp_path / "model.onnx"
    output.write_bytes(b"a good model from yesterday")

    def export_onto_a_full_disk(module, args, f, **options):
        with open(f, "wb") as handle:
            handle.write(b"\x08\x07half a graph")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch.onnx, "export", export_onto_a_full_disk)
    assert export.main([f"checkpoint={checkpoint}", f"output={output}"]) == 2
    line = one_error_line(capsys)
    assert line == f"error: cannot write {output}: the disk is full (the previous model.onnx is unchanged); free space there or choose another location"
    assert output.read_bytes() == b"a good model from yesterday" and leftovers(tmp_path) == []


def test_export_refuses_an_output_it_cannot_write_before_reading_the_checkpoint(checkpoint, tmp_path, never_loads, capsys):
    (tmp_path / "folder.onnx").mkdir()
    (tmp_path / "a_file").write_text("x")
    assert export.main([f"checkpoint={checkpoint}", f"output={tmp_path / 'folder.onnx'}"]) == 2
    assert one_error_line(capsys) == f"error: output: {tmp_path / 'folder.onnx'} is a folder, not a file; give a file name"
    assert export.main([f"checkpoint={checkpoint}", f"output={tmp_path / 'a_file' / 'model.onnx'}"]) == 2
    assert f"{tmp_path / 'a_file'} is a file, not a folder" in one_error_line(capsys)
    weights = tmp_path / "weights.onnx"
    weights.write_bytes(checkpoint.read_bytes())
    assert export.main([f"checkpoint={weights}", f"output={weights}"]) == 2
    assert f"output: {weights} is checkpoint {weights}, which this command reads" in one_error_line(capsys)


def test_a_checkpoint_path_that_is_a_folder_is_called_one(checkpoint, tmp_path, capsys):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "best.pt").write_bytes(checkpoint.read_bytes())
    assert export.main([f"checkpoint={run}", f"output={tmp_path / 'm.onnx'}"]) == 2
    line = one_error_line(capsys)
    assert f"checkpoint {run} is a folder, not a checkpoint file; give the file, e.g. {run / 'checkpoints' / 'best.pt'}" in line
    assert "does not exist" not in line


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        cv2.imwrite(str(folder / f"{name}.png"), rng.integers(0, 255, (64, 96, 3), dtype=np.uint8))
    return folder


def test_predict_refuses_an_output_that_is_a_file_or_unwritable_before_the_model_loads(checkpoint, photos, tmp_path, never_loads, capsys, monkeypatch):
    taken = tmp_path / "taken.png"
    taken.write_bytes(b"a file")
    assert predict.main([f"checkpoint={checkpoint}", f"input={photos}", f"output={taken}"]) == 2
    assert one_error_line(capsys) == f"error: output: {taken} is a file, not a folder; give a folder (it is created when missing)"

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "TemporaryFile", read_only)
    assert predict.main([f"checkpoint={checkpoint}", f"input={photos}", f"output={tmp_path / 'out'}"]) == 2
    assert f"error: output: {tmp_path / 'out'} cannot be written: the file system is read-only" in one_error_line(capsys)
    assert not (tmp_path / "out").exists()


def test_predict_never_writes_into_its_input(checkpoint, photos, tmp_path, never_loads, capsys):
    assert predict.main([f"checkpoint={checkpoint}", f"input={photos}", f"output={photos}"]) == 2
    assert f"output: {photos / 'color'} is inside input {photos}, which this command reads" in one_error_line(capsys)
    colour = photos / "color"
    colour.mkdir()
    cv2.imwrite(str(colour / "a.png"), np.zeros((8, 8, 3), np.uint8))  # an input that output/color/a.png would replace
    assert predict.main([f"checkpoint={checkpoint}", f"input={colour}", f"output={photos}", "formats=[color]"]) == 2
    assert f"output: {colour} is input {colour}" in one_error_line(capsys)
    assert sorted(p.name for p in photos.rglob("*")) == ["a.png", "a.png", "b.png", "color"]


@pytest.mark.skipif(not hasattr(__import__("os"), "geteuid") or __import__("os").geteuid() == 0, reason="root writes into read-only folders")
def test_predict_refuses_a_read_only_output_folder(checkpoint, photos, tmp_path, never_loads, capsys):
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o555)
    try:
        assert predict.main([f"checkpoint={checkpoint}", f"input={photos}", f"output={out}"]) == 2
    finally:
        out.chmod(0o755)
    assert f"output: {out / 'color'} cannot be written: no permission to write there" in one_error_line(capsys)


def test_predict_on_a_disk_that_fills_leaves_no_partial_png(checkpoint, photos, tmp_path, capsys):
    out = tmp_path / "out"
    previous = out / "overlay" / "a.png"
    previous.parent.mkdir(parents=True)
    cv2.imwrite(str(previous), np.zeros((4, 4, 3), np.uint8))
    before = previous.read_bytes()
    with writes_fail_beyond(4096):  # an overlay of a noisy 64x96 photo is ~18 KB
        code = predict.main([f"checkpoint={checkpoint}", f"input={photos}", f"output={out}", "device=cpu", "formats=[overlay]"])
    assert code == 2
    line = one_error_line(capsys)
    assert line.startswith(f"error: cannot write {previous}: the file is larger than this process may write")
    assert "(the previous a.png is unchanged)" in line
    assert previous.read_bytes() == before and leftovers(out) == [] and sorted(p.name for p in out.rglob("*.png")) == ["a.png"]


def test_an_image_opencv_refuses_is_skipped_and_named(checkpoint, photos, tmp_path, monkeypatch, capsys):
    cv2.imwrite(str(photos / "huge.png"), np.zeros((200, 300, 3), np.uint8))
    decode = cv2.imdecode

    def with_a_pixel_limit(data, flags):  # what OPENCV_IO_MAX_IMAGE_PIXELS=10000 makes OpenCV do
        image = decode(data, flags)
        if image is not None and image.shape[0] * image.shape[1] > 10_000:
            raise cv2.error(
                "OpenCV(5.1.0) /io/opencv/modules/imgcodecs/src/loadsave.cpp:80: error: (-215:Assertion failed) "
                "pixels <= CV_IO_MAX_IMAGE_PIXELS in function 'validateInputImageSize'\n"
            )
        return image

    monkeypatch.setattr(cv2, "imdecode", with_a_pixel_limit)
    out = tmp_path / "out"
    assert predict.main([f"checkpoint={checkpoint}", f"input={photos}", f"output={out}", "device=cpu", "formats=[color]"]) == 0
    captured = capsys.readouterr()
    warnings = [line for line in captured.err.splitlines() if line.strip()]
    assert len(warnings) == 1 and warnings[0].startswith(f"warning: skipped 1 of 3 file(s) in {photos} that OpenCV cannot decode: huge.png (")
    assert "OPENCV_IO_MAX_IMAGE_PIXELS" in warnings[0]
    assert sorted(p.name for p in (out / "color").iterdir()) == ["a.png", "b.png"] and "2 image(s)" in captured.out


@pytest.mark.slow
def test_an_image_over_opencvs_real_pixel_limit_is_skipped_and_named(checkpoint, photos, tmp_path):
    from conftest import run_entry_point

    cv2.imwrite(str(photos / "huge.png"), np.zeros((200, 300, 3), np.uint8))
    out = tmp_path / "out"
    result = run_entry_point(
        "scripts/predict.py", f"checkpoint={checkpoint}", f"input={photos}", f"output={out}", "device=cpu", "formats=[color]",
        env={"OPENCV_IO_MAX_IMAGE_PIXELS": "10000"},
    )  # fmt: skip
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: skipped")]
    assert len(warnings) == 1 and "skipped 1 of 3 file(s)" in warnings[0] and "huge.png (" in warnings[0]
    assert "Traceback" not in result.stderr and sorted(p.name for p in (out / "color").iterdir()) == ["a.png", "b.png"]
