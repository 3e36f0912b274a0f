"""The plain data of a checkpoint as read (``checkpoints.stored_data``): what is refused, with which line, and what is kept."""

import pytest

from recallseg.checkpoints.stored_data import StoredDataError, read_stored_data

EDITED = "recallseg never writes that, so the file was edited or comes from another program: use a checkpoint written by recallseg train"


def refusal(state):
    with pytest.raises(StoredDataError) as info:
        read_stored_data(state, "ck.pt")
    return str(info.value)


def test_an_empty_class_list_is_refused():
    assert refusal({"classes": []}) == f"ck.pt: classes: must be a non-empty list of class names, got '[]'; {EDITED}"


def test_only_hydra_underscore_keys_are_refused_a_key_that_merely_starts_with_one_is_data():
    assert read_stored_data({"config": {"dataset": {"_note": "x", "note_": 1}}}, "ck.pt") == {"config": {"dataset": {"_note": "x", "note_": 1}}}
    assert refusal({"config": {"dataset": {"_convert_": "all"}}}) == (
        f"ck.pt: config.dataset._convert_: is a Hydra key that changes what is called or how; {EDITED}"
    )


def test_palette_values_run_from_0_to_255():
    assert read_stored_data({"palette": [[0, 128, 255]]}, "ck.pt") == {"palette": [[0, 128, 255]]}
    assert refusal({"palette": [[0, 128, 256]]}) == (
        f"ck.pt: palette: must be a list of [r, g, b] colours, integers 0-255, got '[[0, 128, 256]]'; {EDITED}"
    )


@pytest.mark.parametrize("iteration", [True, -1, 2.0])
def test_the_iteration_must_be_a_non_negative_integer(iteration):
    assert refusal({"iteration": iteration}) == f"ck.pt: iteration: must be a non-negative integer, got '{iteration}'; {EDITED}"
    assert read_stored_data({"iteration": 0}, "ck.pt") == {"iteration": 0}


def test_an_interpolation_in_a_config_key_is_refused():
    assert refusal({"config": {"dataset": {"${oc.env:HOME}": 1}}}) == (
        "ck.pt: config.dataset.${oc.env:HOME}: holds the interpolation '${oc.env:HOME}', which would be resolved (run) when read; "
        + EDITED
    )


def test_the_monitor_is_one_of_the_metric_names_as_the_trainer_stores_them():
    for monitor in ("mIoU", "mAcc", "aAcc", "mPrecision"):
        assert read_stored_data({"monitor": monitor}, "ck.pt") == {"monitor": monitor}
    assert refusal({"monitor": "val/mIoU"}) == f"ck.pt: monitor: must be one of mIoU, mAcc, aAcc, mPrecision, got 'val/mIoU'; {EDITED}"


def test_a_nan_best_score_is_refused():
    assert refusal({"best_score": float("nan")}) == f"ck.pt: best_score: is NaN; {EDITED}"
