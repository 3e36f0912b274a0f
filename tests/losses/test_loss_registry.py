"""The loss registry: names from configs/loss, losses registered from Python, losses of another package."""

import inspect
import textwrap

import pytest
import torch

from conftest import TINY_OVERRIDES, run_entry_point
from recallseg.config.schema import Option
from recallseg.errors import ConfigError
from recallseg.losses import LOSSES, LossContext, SegmentationLoss, available_losses, build_loss, loss_config, register_loss
from recallseg.losses.recall import RecallLoss
from recallseg.losses.registry import SUPPLIED, loss_class


def test_available_losses_are_the_config_files_and_build_by_name():
    names = available_losses()
    assert {"ce", "weighted_ce", "recall", "focal", "lovasz", "ohem", "class_balanced", "combined"} <= set(names)
    loss = build_loss("recall", LossContext(num_classes=4), soft=True)
    assert type(loss) is RecallLoss and loss.soft is True and loss.num_classes == 4


def test_unknown_name_and_option_are_config_errors():
    with pytest.raises(ConfigError, match="did you mean 'recall'"):
        build_loss("recal", LossContext(4))
    with pytest.raises(ConfigError, match="did you mean loss.statistics"):
        build_loss("recall", LossContext(4), statistic="batch")


@pytest.mark.parametrize("name", sorted(set(available_losses()) - {"half_ce_for_test", "declared_for_test"}))
def test_every_loss_declares_its_options_once_and_its_yaml_sets_only_those(name):
    """The declaration is the only list of a loss's options: it names each keyword argument of a
    constructor that a config reaches (from_config not overridden), and every key of its YAML."""
    cls = loss_class(loss_config(name))
    assert cls.options is not None and all(isinstance(spec, Option) for spec in cls.options.values())
    assert set(loss_config(name)) - {"_target_"} <= set(cls.options)
    if cls.from_config.__func__ is SegmentationLoss.from_config.__func__:
        parameters = set(inspect.signature(cls.__init__).parameters) - {"self"} - SUPPLIED
        assert set(cls.options) == parameters


def test_a_loss_with_its_own_from_config_is_checked_like_any_other():
    """No way around the declaration: a custom from_config gets only declared, valid options."""

    @register_loss("declared_for_test")
    class Declared(SegmentationLoss):
        options = {"scale": Option(float, minimum=0)}

        @classmethod
        def from_config(cls, options, context):
            raise AssertionError("built from an unchecked section")

    try:
        with pytest.raises(ConfigError) as info:
            build_loss("declared_for_test", LossContext(3), scale=-1.0)
        assert str(info.value) == "loss.scale: got -1.0; it must be a number >= 0; set e.g. loss.scale=1"
        with pytest.raises(ConfigError) as info:
            build_loss("declared_for_test", LossContext(3), scal=1.0)
        assert str(info.value) == f"loss.scal: {Declared.__module__}.{Declared.__qualname__} takes no option 'scal'; did you mean loss.scale?"
    finally:
        LOSSES.pop("declared_for_test", None)


def test_a_loss_registered_from_python_builds_by_name_and_cannot_take_a_taken_name():
    @register_loss("half_ce_for_test")
    class HalfCE(torch.nn.Module):
        def __init__(self, num_classes, ignore_index=255, factor=0.5):
            super().__init__()
            self.factor = factor

        def forward(self, logits, target):
            return self.factor * torch.nn.functional.cross_entropy(logits, target, ignore_index=255)

    assert "half_ce_for_test" in available_losses()
    loss = build_loss("half_ce_for_test", LossContext(3), factor=0.25)
    logits, target = torch.randn(2, 3, 4, 4), torch.randint(0, 3, (2, 4, 4))
    assert torch.allclose(loss(logits, target), 0.25 * torch.nn.functional.cross_entropy(logits, target))
    with pytest.raises(ValueError, match="already exists"):
        register_loss("recall")(HalfCE)
    # Declaring no options, it takes its constructor's keyword arguments, and only those.
    with pytest.raises(ConfigError) as info:
        build_loss("half_ce_for_test", LossContext(3), factr=0.25)
    assert info.value.key == "loss.factr" and str(info.value).endswith("did you mean loss.factor?")


@pytest.mark.slow
def test_a_loss_from_another_package_needs_only_a_yaml(tmp_path, cache_env):
    """One module outside recallseg and one YAML in the user's config folder; `loss=<name>` trains with it."""
    package = tmp_path / "my_losses"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "scaled.py").write_text(textwrap.dedent('''
        import torch
        from recallseg.losses import SegmentationLoss

        class ScaledCE(SegmentationLoss):
            def __init__(self, num_classes, ignore_index=255, scale=1.0):
                super().__init__(num_classes, ignore_index)
                self.scale = scale

            def forward(self, logits, target):
                return self.scale * torch.nn.functional.cross_entropy(logits.float(), target, ignore_index=self.ignore_index)
    '''))
    configs = tmp_path / "my_configs" / "loss"
    configs.mkdir(parents=True)
    (configs / "scaled_ce.yaml").write_text("_target_: my_losses.scaled.ScaledCE\nscale: 2.0\n")
    run = tmp_path / "run"
    result = run_entry_point(
        "train.py", *TINY_OVERRIDES, "loss=scaled_ce", f"hydra.searchpath=[file://{tmp_path / 'my_configs'}]", f"hydra.run.dir={run}",
        env={**cache_env, "PYTHONPATH": str(tmp_path)},
    )
    assert "my_losses.scaled.ScaledCE" in (run / "train.log").read_text()
    assert (run / "checkpoints" / "last.pt").is_file() and result.returncode == 0


def test_a_loss_built_in_python_is_held_to_its_declared_options():
    """RecallLoss(...) in one's own loop refuses what loss.momentum=1 on the command line refuses, with the same line."""
    from recallseg.errors import ConfigError
    from recallseg.losses import FocalLoss, RecallLoss

    for build, message in (
        (lambda: RecallLoss(4, momentum=1.0), "loss.momentum: got 1.0; it must be a number in [0, 1)"),
        (lambda: RecallLoss(4, statistics="running"), "loss.statistics: got 'running'; it must be one of batch, ema"),
        (lambda: FocalLoss(4, gamma=-1), "loss.gamma: got -1; it must be a number >= 0"),
    ):
        with pytest.raises(ConfigError) as info:
            build()
        assert str(info.value).startswith(message), str(info.value)
    assert RecallLoss(4, statistics="ema", momentum=0.0).momentum == 0.0

    class MyRecall(RecallLoss):  # a user's subclass: its own constructor is checked once, by its own options
        def __init__(self, num_classes, scale=2.0, **kwargs):
            super().__init__(num_classes, **kwargs)
            self.scale = scale

    assert MyRecall(4, momentum=0.5).scale == 2.0
    with pytest.raises(ConfigError, match=r"^loss.momentum: got 2"):
        MyRecall(4, momentum=2)


@pytest.mark.parametrize(
    "target, message",
    [
        (
            "os.system",
            "loss._target_: the stored config names 'os.system', which is not part of recallseg, segmentation-models-pytorch, "
            "albumentations or torch.optim, and recallseg never imports or calls what a checkpoint names; if you trust it, name it yourself "
            "for this run: loss._target_=os.system",
        ),
        (
            "recallseg.runtime.normalize.Normalizer",
            "loss._target_: the stored config names 'recallseg.runtime.normalize.Normalizer', which is not a SegmentationLoss "
            "of recallseg or its libraries; name it yourself on the command line for this run if you trust it",
        ),
    ],
    ids=["outside_recallseg", "a_recallseg_module_that_is_not_a_loss"],
)
def test_an_untrusted_loss_section_may_name_only_recallseg_losses(target, message):
    with pytest.raises(ConfigError) as info:
        loss_class({"_target_": target}, trusted=False)
    assert str(info.value) == message
    assert loss_class({"_target_": "recallseg.losses.recall.RecallLoss"}, trusted=False) is RecallLoss


def test_registering_the_same_class_again_under_its_name_is_accepted():
    """A module imported twice (a notebook re-running a cell) registers its loss again: not a clash."""

    class Twice(SegmentationLoss):
        pass

    try:
        assert register_loss("twice_for_test")(Twice) is Twice
        assert register_loss("twice_for_test")(Twice) is Twice
        assert loss_config("twice_for_test") == {"_target_": f"{Twice.__module__}.{Twice.__qualname__}"}
    finally:
        LOSSES.pop("twice_for_test", None)


def test_a_constructor_refusing_a_value_is_a_config_error_but_a_bug_in_recallseg_keeps_its_error():
    from recallseg.evaluation.metrics import metrics_from_confusion

    @register_loss("refusing_for_test")
    class Refusing(SegmentationLoss):
        def __init__(self, num_classes, ignore_index=255, size=1):
            raise ValueError(f"size {size} is too large")

    @register_loss("buggy_for_test")
    class Buggy(SegmentationLoss):
        def __init__(self, num_classes, ignore_index=255):
            metrics_from_confusion(torch.zeros(2, 2), ["a"])  # a ValueError raised inside recallseg

    try:
        with pytest.raises(ConfigError) as info:
            build_loss("refusing_for_test", LossContext(3), size=7)
        assert str(info.value) == f"loss: {Refusing.__module__}.{Refusing.__qualname__}: size 7 is too large; fix the loss options"
        with pytest.raises(ValueError) as info:
            build_loss("buggy_for_test", LossContext(3))
        assert type(info.value) is ValueError
        assert str(info.value) == "confusion matrix has 2 classes but 1 names were given"
    finally:
        LOSSES.pop("refusing_for_test", None)
        LOSSES.pop("buggy_for_test", None)
