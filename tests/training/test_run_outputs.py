"""What a training run leaves: TensorBoard pictures of the validation, and checkpoints that hold
what they are for (best.pt: the model; last.pt: a resume)."""

import cv2
import numpy as np
import pytest
import torch

from conftest import TINY_OVERRIDES, run_entry_point
from recallseg.checkpoints.format import load_checkpoint


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    run_entry_point("train.py", *TINY_OVERRIDES, "dataset.num_val=6", "loss=ce", f"hydra.run.dir={root / 'run'}", env={"RECALLSEG_CACHE": str(root / "cache")})
    return root / "run"


def tensorboard_images(run_dir) -> dict[str, np.ndarray]:
    """The last picture of every image tag, decoded to HxWx3 RGB."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    pictures = {}
    for tag in events.Tags()["images"]:
        encoded = np.frombuffer(events.Images(tag)[-1].encoded_image_string, np.uint8)
        pictures[tag] = cv2.imdecode(encoded, cv2.IMREAD_COLOR)[:, :, ::-1]
    return pictures


@pytest.mark.slow
def test_validation_pictures_show_image_truth_and_the_models_prediction(run):
    from recallseg.data.synthetic import PALETTE, SyntheticStreets
    from recallseg.runtime.device import Runtime
    from recallseg.runtime.normalize import Normalizer
    from recallseg.training.tensorboard_images import picked_indices
    from recallseg.models import build_model

    pictures = tensorboard_images(run)
    picked = picked_indices(6)
    assert picked == [0, 2, 3, 5]
    expected_tags = {f"val_images/{k}/{kind}" for k in range(4) for kind in ("image", "ground_truth", "prediction")}
    assert expected_tags | {"val_images/per_class_precision_recall"} == set(pictures)
    # Oracle: the final model (last.pt, saved after the last validation) on the same images, coloured by hand.
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    model = build_model(state["config"]["model"], 9, trusted=False, offline=True)
    model.load_state_dict(state["model"])
    model.eval()
    val = SyntheticStreets("val", 64, 64, num_val=6)
    normalizer = Normalizer(state["config"]["model"]["mean"], state["config"]["model"]["std"], Runtime(torch.device("cpu"), None, False))
    palette = np.array(PALETTE, np.uint8)
    for k, index in enumerate(picked):
        image, mask = val[index]
        assert np.array_equal(pictures[f"val_images/{k}/image"], image)
        with torch.no_grad():
            labels = model(normalizer(torch.from_numpy(image)[None])).argmax(1)[0].numpy()
        assert np.array_equal(pictures[f"val_images/{k}/prediction"], palette[labels]), k
        truth = np.zeros((64, 64, 3), np.uint8)
        truth[mask != 255] = palette[mask[mask != 255]]
        assert np.array_equal(pictures[f"val_images/{k}/ground_truth"], truth), k
        assert pictures[f"val_images/{k}/prediction"].shape == (64, 64, 3)
    chart = pictures["val_images/per_class_precision_recall"]
    assert chart.ndim == 3 and chart.shape[2] == 3 and chart.shape[0] > 200 and chart.std() > 0


@pytest.mark.slow
def test_best_pt_holds_the_model_and_last_pt_a_resume(run):
    best, last = (load_checkpoint(run / "checkpoints" / name) for name in ("best.pt", "last.pt"))  # weights_only loads
    assert set(best) == {"format", "version", "model", "config", "classes", "palette", "iteration", "best_score", "monitor", "run"}
    assert {"optimizer", "scheduler", "scaler", "rng", "loss"} <= set(last)
    assert (run / "checkpoints" / "best.pt").stat().st_size < 0.5 * (run / "checkpoints" / "last.pt").stat().st_size
    for key in best["model"]:
        assert torch.equal(best["model"][key], last["model"][key]), key  # one validation: the same model


@pytest.mark.slow
def test_a_resume_from_best_pt_is_refused_in_one_line(run, tmp_path):
    result = run_entry_point(
        "train.py", *TINY_OVERRIDES, "loss=ce", f"resume={run / 'checkpoints' / 'best.pt'}", f"hydra.run.dir={tmp_path / 'again'}", check=False
    )
    assert result.returncode == 2, result.stderr[-2000:]
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: resume=") and "holds the model only" in line and "last.pt" in line and "Traceback" not in result.stderr


@pytest.mark.slow
def test_best_pt_is_evaluated_predicted_and_exported(run, tmp_path):
    pytest.importorskip("onnxruntime")
    from recallseg.commands import export, predict

    best = run / "checkpoints" / "best.pt"
    result = run_entry_point("evaluate.py", f"checkpoint={best}", f"hydra.run.dir={tmp_path / 'eval'}")
    assert "mIoU" in result.stdout
    cv2.imwrite(str(tmp_path / "photo.png"), np.zeros((40, 60, 3), np.uint8))
    assert predict.main([f"checkpoint={best}", f"input={tmp_path / 'photo.png'}", f"output={tmp_path / 'pred'}", "device=cpu"]) == 0
    assert export.main([f"checkpoint={best}", f"output={tmp_path / 'm.onnx'}", "raw_input=true"]) == 0


@pytest.mark.slow
def test_the_table_that_ends_a_run_is_also_in_train_log(tmp_path, capsys):
    """The per-class table goes to the console and to the run's log file (the run's record)."""
    import logging

    from conftest import TINY_OVERRIDES
    from recallseg.commands.train import run_training
    from recallseg.config.compose import compose_checked

    handler = logging.FileHandler(tmp_path / "train.log")
    logging.getLogger().addHandler(handler)
    try:
        small_model = ["model.arch=Unet", "model.encoder_name=mobilenet_v2", "~model.encoder_output_stride", "+model.encoder_depth=3", "+model.decoder_channels=[16,8,8]"]
        run_training(compose_checked("train", [*TINY_OVERRIDES, *small_model, "trainer.max_iters=1", "trainer.val_interval=1", f"output_dir={tmp_path / 'run'}"]))
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    printed = capsys.readouterr().out
    table = printed[printed.index("| class"):].strip() if "| class" in printed else printed.strip()
    log_text = (tmp_path / "train.log").read_text()
    assert "final metrics at iteration 1:" in log_text
    assert table.splitlines()[0] in log_text and table.splitlines()[-1] in log_text
