"""The loss registry: every loss has a name, a class and default options.

recallseg's own losses are the YAML files of ``configs/loss/``: ``configs/loss/recall.yaml``
holds ``_target_: recallseg.losses.recall.RecallLoss`` and the defaults, and ``loss=recall``
picks it. Adding one takes a Python module with the class and that YAML file; nothing else.

From Python, in your own training loop::

    from recallseg.losses import LossContext, available_losses, build_loss
    available_losses()                                   # ['ce', 'class_balanced', ..., 'recall', ...]
    criterion = build_loss("recall", LossContext(num_classes=19), soft=True)

Register a loss of your own package with ``@register_loss("my_loss")`` (it can then be built
by name and, from a program that imports it, picked with ``loss=my_loss``), or write one YAML
with its ``_target_`` in a config folder of yours (``hydra.searchpath=[file:///path/to/configs]``,
with the file at ``loss/my_loss.yaml``).

A loss class takes ``num_classes`` and ``ignore_index`` plus its options, and declares those
options once, in ``options``: each name with the ``Option`` its value must fit (type, range,
choices). ``build_loss`` checks a section against that declaration before anything is built,
so a constructor takes its arguments as given. One that needs more (the training split's class
statistics, say) overrides ``from_config(options, context)`` and asks the ``LossContext``; the
trainer never special-cases a loss.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, replace
from typing import Any, Callable, ClassVar, Mapping

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from recallseg.config.files import config_dir, group_options
from recallseg.config.construct import Trust, check_options, check_trusted_object, check_untrusted_section, check_untrusted_text, locate, raised_in_recallseg, resolved
from recallseg.config.schema import Option, check_value
from recallseg.errors import ConfigError, UserError, nearest
from recallseg.losses.functional import checked_inputs

# Losses registered from Python: name -> their config section ({_target_: ..., **defaults}).
LOSSES: dict[str, dict[str, Any]] = {}
# Their classes by target (a class defined inside a function cannot be imported by name).
_CLASSES: dict[str, type] = {}
# What the program gives every loss; a config that sets them is refused.
SUPPLIED = {"num_classes", "ignore_index"}


@dataclass
class LossContext:
    """What the trainer knows that a loss may need."""

    num_classes: int
    ignore_index: int = 255
    # Returns per-class pixel counts of the *training* split (computed once and cached).
    class_pixel_counts: Callable[[], torch.Tensor] | None = None
    # Returns the training split's ``pipeline.class_statistics.ClassStatistics`` (pixel counts and, per
    # class, the labelled pixels of the images containing it); gives ``class_pixel_counts`` too.
    class_statistics: Callable[[], Any] | None = None

    def __post_init__(self) -> None:
        if self.class_pixel_counts is None and self.class_statistics is not None:
            statistics = self.class_statistics
            self.class_pixel_counts = lambda: statistics().pixel_counts


class SegmentationLoss(nn.Module):
    """Base class of recallseg losses: ``loss(logits, target) -> scalar``, with the shapes of
    ``torch.nn.CrossEntropyLoss`` and class-index targets: logits ``(N, C)`` or
    ``(N, C, d1, ..., dk)`` (pixels, points, graph nodes, voxels), an integer target ``(N)`` or
    ``(N, d1, ..., dk)``. A call whose C is not ``num_classes``, whose target is not an integer
    tensor or whose shapes disagree raises one ValueError before any math (a forward pre-hook).

    Every recallseg loss computes in float32 and returns a float32 scalar, whatever the logits'
    dtype: half and bfloat16 logits (AMP) are upcast before the softmax, and float64 logits are
    rounded to float32. A target label that is neither a class id nor ``ignore_index`` fails as
    in ``F.cross_entropy``: at once on the CPU, as a device-side assertion on CUDA.

    ``options``, name -> ``Option``, is everything a config section may set for the loss; with
    a custom ``from_config`` that is what it takes, not what the constructor takes. A loss that
    declares none takes its constructor's keyword arguments, with any value.
    """

    options: ClassVar[Mapping[str, Option] | None] = None
    # Buffers a loss computes when it is built, from its options and the training split (class
    # weights): a resumed run keeps the ones it built rather than the checkpoint's, as it keeps
    # every other value of its config (``load_training_state``).
    derived_buffers: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A loss built in Python (``RecallLoss(4, momentum=1.0)``) is held to the same declared
        ``options`` as one built from a config: the subclass's constructor checks what it is given.
        A loss with its own ``from_config`` declares what that takes, which its constructor may
        take in another form (built terms, weights): there the config is what is checked."""
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None or cls.from_config.__func__ is not SegmentationLoss.from_config.__func__:
            return
        signature = inspect.signature(init)
        spread = [name for name, p in signature.parameters.items() if p.kind is p.VAR_KEYWORD]  # **kwargs passed on

        @functools.wraps(init)
        def checked_init(self, *args: Any, **given: Any) -> None:
            if type(self) is cls:  # the outermost constructor checks; super().__init__ calls do not again
                arguments = dict(signature.bind(self, *args, **given).arguments)
                for name in spread:
                    arguments.update(arguments.pop(name, {}))
                check_given_options(cls, arguments)
            init(self, *args, **given)

        cls.__init__ = checked_init

    def __init__(self, num_classes: int, ignore_index: int = 255):
        super().__init__()
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.register_forward_pre_hook(_check_inputs)

    @classmethod
    def from_config(cls, options: Mapping[str, Any], context: LossContext) -> "SegmentationLoss":
        """Build from the YAML options; override to pull extra inputs from ``context``."""
        return cls(num_classes=context.num_classes, ignore_index=context.ignore_index, **dict(options))

    def extra_logs(self) -> dict[str, torch.Tensor]:
        """Detached per-class tensors [C] the trainer logs at log intervals (e.g. weights). Never synced per step."""
        return {}


def _check_inputs(loss: SegmentationLoss, inputs: tuple) -> tuple:
    """Every loss's call starts here: inputs as ``torch.nn.CrossEntropyLoss`` takes them, else one error."""
    if len(inputs) != 2:
        raise TypeError(f"{type(loss).__name__}: takes (logits, target), got {len(inputs)} arguments")
    logits, target = inputs
    return logits, checked_inputs(logits, target, loss.num_classes, type(loss).__name__)


class RegionLoss(SegmentationLoss):
    """Base of the losses over whole class regions (Lovász, soft IoU): which classes the mean
    takes (``"present"`` in the batch or image, or ``"all"``) and whether it is per image."""

    options = {"classes": Option(str, choices=("present", "all")), "per_image": Option(bool)}

    def __init__(self, num_classes: int, ignore_index: int = 255, classes: str = "present", per_image: bool = False):
        super().__init__(num_classes, ignore_index)
        self.classes = classes
        self.per_image = bool(per_image)


def load_training_state(loss: nn.Module, state: Mapping[str, torch.Tensor]) -> list[str]:
    """Load a checkpoint's loss state, keeping the ``derived_buffers`` this run built; returns the
    keys of those whose stored values differ from this run's."""
    built = {}
    for prefix, module in loss.named_modules():
        for name in getattr(module, "derived_buffers", ()):
            if isinstance(getattr(module, name, None), torch.Tensor):
                built[f"{prefix}.{name}" if prefix else name] = (module, name, getattr(module, name).detach().clone())
    loss.load_state_dict(state)
    changed = []
    for key, (module, name, value) in built.items():
        stored = state.get(key)
        if stored is None or stored.shape != value.shape or not torch.equal(stored.to(value.device, value.dtype), value):
            changed.append(key)
        getattr(module, name).copy_(value)
    return changed


def register_loss(name: str, **defaults: Any) -> Callable[[type[SegmentationLoss]], type[SegmentationLoss]]:
    """Class decorator: makes a loss available by ``name`` (``build_loss(name, ...)`` and ``loss=<name>``)."""

    def decorator(cls: type[SegmentationLoss]) -> type[SegmentationLoss]:
        target = f"{cls.__module__}.{cls.__qualname__}"
        taken = LOSSES.get(name, {}).get("_target_") or (f"configs/loss/{name}.yaml" if name in group_options("loss") else None)
        if taken and taken != target:
            raise ValueError(f"a loss named {name!r} already exists ({taken}); choose another name")
        LOSSES[name] = {"_target_": target, **defaults}
        _CLASSES[target] = cls
        from hydra.core.config_store import ConfigStore

        ConfigStore.instance().store(group="loss", name=name, node=LOSSES[name])
        return cls

    return decorator


def available_losses() -> list[str]:
    """Every loss name: recallseg's YAML files and the losses registered from Python."""
    return sorted(set(group_options("loss")) | set(LOSSES))


def loss_config(name: str) -> dict[str, Any]:
    """The config section of a named loss (its ``_target_`` and default options)."""
    if name in LOSSES:
        return dict(LOSSES[name])
    if name not in group_options("loss"):
        hint = nearest(name, available_losses())
        raise ConfigError("loss", f"no loss named {name!r}", f"did you mean {hint!r}?" if hint else f"available: {', '.join(available_losses())}")
    root = OmegaConf.load(config_dir() / "train.yaml")
    top = {k: v for k, v in OmegaConf.to_container(root, resolve=False).items() if k not in ("defaults", "hydra", "output_dir")}
    section = OmegaConf.merge(top, {"loss": _loss_yaml(name)})
    return OmegaConf.to_container(section, resolve=True)["loss"]


def _loss_yaml(name: str) -> DictConfig:
    """configs/loss/<name>.yaml, over the loss YAMLs its defaults list extends (a preset such as recall_ema)."""
    node = OmegaConf.load(config_dir() / "loss" / f"{name}.yaml")
    bases = [str(base) for base in node.pop("defaults", []) if str(base) != "_self_"]
    return OmegaConf.merge(*[_loss_yaml(base) for base in bases], node) if bases else node


def loss_class(section: Mapping[str, Any], where: str = "loss", trusted: bool = True) -> type[SegmentationLoss]:
    """The class a loss section names (refusing, when untrusted, anything but recallseg's own losses)."""
    if not isinstance(section, Mapping) or "_target_" not in section:
        raise ConfigError(where, f"must be a section with a _target_ naming a loss class, got {section!r}", "pick one with loss=<name>")
    if not trusted:
        check_untrusted_text(section, where)
    cls = _CLASSES.get(section["_target_"]) if trusted else None
    cls = cls or locate(section["_target_"], f"{where}._target_")
    if not trusted:
        check_trusted_object(cls, section["_target_"], f"{where}._target_", SegmentationLoss)
    if not (inspect.isclass(cls) and issubclass(cls, nn.Module)):
        raise ConfigError(f"{where}._target_", f"{section['_target_']} is not a loss (an nn.Module class)", "name a SegmentationLoss subclass")
    return cls


def option_specs(cls: type, num_classes: int | None = None) -> dict[str, Option] | None:
    """The ``Option``s a loss class declares, a per-class list's length set to ``num_classes``; None if it declares none."""
    declared = cls.options if issubclass(cls, SegmentationLoss) else None
    if declared is None:
        return None
    return {name: replace(spec, length=num_classes) if spec.per_class and num_classes else spec for name, spec in declared.items()}


def check_given_options(cls: type, arguments: Mapping[str, Any]) -> None:
    """Check the constructor ``arguments`` that ``cls`` declares as options, by their ``Option``s."""
    specs = option_specs(cls, arguments.get("num_classes")) or {}
    for name, value in arguments.items():
        if name in specs:
            check_value(f"loss.{name}", value.tolist() if isinstance(value, torch.Tensor) else value, specs[name])


def check_loss_options(section: Mapping[str, Any], where: str = "loss", num_classes: int | None = None) -> type:
    """Refuse, before anything is computed, an option the loss does not declare or a value its
    ``Option`` refuses; the loss class otherwise."""
    cls = loss_class(section, where)
    options = {k: v for k, v in section.items() if k != "_target_"}
    check_options(cls, options, where, section["_target_"], SUPPLIED, option_specs(cls, num_classes))
    return cls


def build_loss(spec: str | Mapping[str, Any], context: LossContext, where: str = "loss", trust: Trust = Trust(), **options: Any) -> SegmentationLoss:
    """Build a loss from a name (``"recall"``), a section naming one (``{"name": "recall", "soft": True}``)
    or a config section (``{"_target_": ..., ...}``), with ``options`` on top of its defaults.
    With a stored section (``trust``), every target in it, a combined loss's terms' included, must
    be a loss class of a trusted package, checked as text before anything is imported."""
    section = {"name": spec} if isinstance(spec, str) else dict(resolved(spec))
    if "_target_" not in section and "name" in section:
        section = {**loss_config(str(section.pop("name"))), **section}
    section.update({key: resolved(value) for key, value in options.items()})
    if not trust.trusted:  # a combined loss's terms included: every target a loss class
        check_untrusted_section(section, where, trust.named_by_user, lambda path: SegmentationLoss)
    cls = check_loss_options(section, where, context.num_classes)
    rest = {k: v for k, v in section.items() if k != "_target_"}
    try:
        if issubclass(cls, SegmentationLoss):
            return cls.from_config(rest, context)
        return cls(num_classes=context.num_classes, ignore_index=context.ignore_index, **rest)
    except UserError:
        raise
    except (ValueError, TypeError) as error:
        if raised_in_recallseg(error):  # recallseg refuses a user's value as a UserError; this is a bug
            raise
        raise ConfigError(where, f"{section['_target_']}: {error}", "fix the loss options") from None
