"""What last.pt and best.pt hold (``checkpoints.contents``)."""

import pytest

from recallseg.checkpoints.contents import for_inference, missing_training_state, require_training_state
from recallseg.checkpoints.format import CheckpointError

LAST = {
    "model": {}, "optimizer": {}, "scheduler": {}, "scaler": {}, "loss": {}, "rng": {}, "iteration": 7, "best_score": 0.5,
    "config": {}, "classes": ["a"], "palette": [[0, 0, 0]], "monitor": "mIoU",
}


def test_best_pt_keeps_the_weights_config_classes_palette_and_the_score_with_its_iteration_and_monitor():
    assert for_inference(LAST) == {
        "model": {}, "config": {}, "classes": ["a"], "palette": [[0, 0, 0]], "iteration": 7, "best_score": 0.5, "monitor": "mIoU",
    }


@pytest.mark.parametrize("missing", ["optimizer", "scheduler", "iteration"])
def test_a_run_continues_only_from_a_checkpoint_with_optimizer_scheduler_and_iteration(missing):
    state = {key: value for key, value in LAST.items() if key != missing}
    assert missing_training_state(state) == [missing]
    with pytest.raises(CheckpointError) as info:
        require_training_state(state, "/run/checkpoints/best.pt")
    assert str(info.value) == (
        f"resume=/run/checkpoints/best.pt: it holds the model only (no {missing} state), so a run cannot continue from it; "
        "resume from /run/checkpoints/last.pt (or resume=auto), or start a new run from these weights"
    )
    assert missing_training_state(LAST) == []
    require_training_state(LAST, "/run/checkpoints/last.pt")
