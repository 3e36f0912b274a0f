"""What a failing constructor becomes: a user's value refused by a library is one line naming the
section; recallseg's own refusals keep their own line; an error of recallseg's own code is a bug
and keeps its traceback (it is never passed off as "fix your config")."""

import pytest

from recallseg.config.construct import build, raised_in_recallseg
from recallseg.errors import ConfigError


def test_a_librarys_refusal_of_the_users_value_is_one_line_naming_the_section():
    with pytest.raises(ConfigError) as info:
        build({"_target_": "albumentations.HorizontalFlip", "p": "often"}, "dataset.val_transform[0]")
    assert str(info.value).startswith("dataset.val_transform[0]: albumentations.HorizontalFlip: ")
    assert str(info.value).endswith("; fix the options in that section")


def test_recallsegs_own_refusal_keeps_its_own_line():
    with pytest.raises(ConfigError, match=r"^RandomScaleCrop.scale: must be \[min, max\] with 0 < min <= max, got \[2.0, 1.0\]"):
        build({"_target_": "recallseg.pipeline.transforms.RandomScaleCrop", "height": 8, "width": 8, "scale": [2.0, 1.0]}, "t")
    with pytest.raises(ConfigError, match=r"^scheduler: power and warmup_iters must be >= 0"):
        build({"_target_": "recallseg.training.optim.PolySchedule", "power": -1.0}, "scheduler")


def test_an_error_of_recallsegs_own_code_keeps_its_traceback():
    """build_transform(size_divisor=0) is recallseg code called wrongly: a bug, not the user config."""
    with pytest.raises(ValueError, match="size_divisor must be positive") as info:
        build({"_target_": "recallseg.pipeline.transforms.build_transform", "specs": [], "size_divisor": 0}, "t")
    assert not isinstance(info.value, ConfigError)
    assert raised_in_recallseg(info.value)


def test_where_an_error_was_raised_is_read_from_its_innermost_frame():
    def here():
        raise ValueError("raised in a test file")

    with pytest.raises(ValueError) as info:
        here()
    assert not raised_in_recallseg(info.value)
    from recallseg.data.synthetic import SyntheticStreets

    with pytest.raises(ConfigError) as inside:
        SyntheticStreets("nowhere", 64, 64)
    assert raised_in_recallseg(inside.value)
    assert str(inside.value) == "dataset.split: SyntheticStreets has the splits test, train, val, got 'nowhere'"


def test_a_loss_whose_own_code_fails_is_a_bug_with_its_traceback(monkeypatch):
    from recallseg.losses import LossContext, RecallLoss, build_loss

    def broken(self, *args, **kwargs):
        raise TypeError("a bug inside the loss")

    broken.__code__ = broken.__code__.replace(co_filename=RecallLoss.__init__.__code__.co_filename)  # as if in recall.py
    monkeypatch.setattr(RecallLoss, "from_config", classmethod(lambda cls, options, context: broken(None)))
    with pytest.raises(TypeError, match="a bug inside the loss"):
        build_loss("recall", LossContext(4, 255))
