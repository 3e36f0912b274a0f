"""The config schema: what every fixed section may hold, checked before any work starts.

Defaults live in the YAML files (with a comment per key); this module only says what each key
may be: its type, range or allowed values. ``validate_*`` refuse unknown keys (including those
added with ``+``), naming the nearest known key, and wrong types or values, as one-line
``ConfigError``s. Sections that name a class (``dataset``, ``model``, ``loss``, ``optimizer``,
``scheduler``) take the options of that class; ``recallseg.config.construct`` checks those when it
is built: against the class's own ``Option``s where it declares them (every loss), else against
its signature.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from omegaconf import DictConfig, OmegaConf

from recallseg.config.finite import refuse_non_finite
from recallseg.errors import ConfigError, nearest


# What a rule says about a value it refuses: the problem and the fix.
Refusal = tuple[str, str]


@dataclass(frozen=True)
class Option:
    """One key: ``kind`` (bool, int, float, str, list), allowed ``choices``, bounds, ``null`` allowed.

    Bounds hold for a number, or for each number of a list: ``minimum``/``maximum`` inclusive,
    ``above``/``below`` exclusive. ``also``: values allowed besides the kind (``"auto"``).
    A fixed section must give every key but a ``null`` one; the options of a class have its
    defaults, so a section must give only a ``required`` one.
    ``rule(key, value, section)`` says what the fields cannot (a relation to the section's other
    keys, what this machine has installed), as a ``(problem, fix)`` refusal or None.
    """

    kind: type | tuple[type, ...]
    choices: Sequence[Any] = ()
    minimum: float | None = None
    maximum: float | None = None
    null: bool = False
    length: int | None = None  # lists: exact length
    item: type | None = None  # lists: type of the items
    positive_items: bool = False
    above: float | None = None
    below: float | None = None
    also: Sequence[Any] = ()
    per_class: bool = False  # lists: one entry per class (the length is known when the section is built)
    required: bool = False
    rule: Callable[[str, Any, Mapping[str, Any]], Refusal | None] | None = None


def positive_int(null: bool = False) -> Option:
    return Option(int, minimum=1, null=null)


TRAINER = {
    "max_iters": positive_int(),
    "batch_size": positive_int(),
    "val_interval": positive_int(),
    "log_interval": positive_int(),
    "num_workers": Option(int, minimum=0),
    "amp": Option(str, choices=("auto", "bf16", "fp16", "off")),
    "device": Option(str, choices=("auto", "cpu", "cuda")),
    "channels_last": Option((bool, str), choices=("auto", True, False)),
    "grad_clip": Option(float, minimum=0, null=True),
    "monitor": Option(str, choices=("val/mIoU", "val/mAcc", "val/aAcc", "val/mPrecision")),
    "sync_batchnorm": Option(bool),
    "freeze_batchnorm": Option(bool),
    "nonfinite": Option(str, choices=("stop", "skip")),
    "stop_after": positive_int(null=True),
    "deterministic": Option(bool), "cuda_graph": Option(bool),
    "smoke": Option(bool), "omp_passive": Option(bool),
}
EVALUATION = {
    "batch_size": positive_int(null=True),
    "num_workers": Option(int, minimum=0),
    "full_resolution": Option(bool),
}
INFERENCE = {
    "mode": Option(str, choices=("whole", "slide")),
    "crop_size": Option(list, length=2, item=int, positive_items=True),
    "stride": Option(list, length=2, item=int, positive_items=True),
    "window_batch": positive_int(),
    "flip": Option(bool),
    "scales": Option(list, item=float, positive_items=True),
    "size_multiple": positive_int(),
}
PREDICTIONS = {
    "save": Option(bool),
    "format": Option(str, choices=("index", "color", "overlay", "cityscapes")),
    "dir": Option(str, null=True),
    "alpha": Option(float, minimum=0, maximum=1),
}
PATHS = {"cache_dir": Option(str)}
# The dataset keys recallseg consumes itself (recallseg.pipeline.builder); every other key is an
# argument of the class ``_target_`` names.
DATASET_RESERVED = {
    "train_transform": Option(list, null=True),
    "val_transform": Option(list, null=True),
    "crop": Option(list, length=2, item=int, positive_items=True, null=True),  # null or absent: the images' own size
    "split": Option(str), "train_split": Option(str), "val_split": Option(str),
    "stats_file": Option(str, null=True),
    "cache": Option(bool, null=True),  # datasets without files (synthetic) have no cache
    "cache_dir": Option(str, null=True),
    "size_divisor": positive_int(null=True),
    "check": Option(bool, null=True),  # null or absent: true (pipeline/data_check.py)
}
MODEL_INPUT = {
    "mean": Option(list, length=3, item=float),
    "std": Option(list, length=3, item=float, positive_items=True),
    "channel_order": Option(str, choices=("rgb", "bgr")),
}

# Top-level keys: a schema dict for fixed sections, "target" for sections that name a class.
TRAIN = {
    "dataset": "target", "model": "target", "loss": "target", "optimizer": "target", "scheduler": "target",
    "trainer": TRAINER, "evaluation": EVALUATION, "inference": INFERENCE, "paths": PATHS,
    "seed": Option(int, minimum=0), "resume": Option(str, null=True), "output_dir": Option(str),
    "protocol": Option(str, choices=("recallseg", "paper"), null=True),
}
EVAL = {  # a null full_resolution or size_multiple: the checkpoint's (evaluation.model_input)
    "checkpoint": Option(str), "output_dir": Option(str), "predictions": PREDICTIONS,
    "evaluation": {**EVALUATION, "full_resolution": Option(bool, null=True)}, "inference": {**INFERENCE, "size_multiple": positive_int(null=True)},
}
# Keys that carry the open sections' reserved entries (checked here; the rest by construct).
RESERVED = {"dataset": DATASET_RESERVED, "model": MODEL_INPUT}


def describe(option: Option) -> str:
    if option.choices:
        return "one of " + ", ".join(str(c).lower() if isinstance(c, bool) else str(c) for c in option.choices)
    kinds = option.kind if isinstance(option.kind, tuple) else (option.kind,)
    text = " or ".join({bool: "true/false", int: "an integer", float: "a number", str: "a string", list: "a list"}[k] for k in kinds)
    if option.length:
        text += f" of {option.length} {'positive ' if option.positive_items else ''}{option.item.__name__}s"
    elif option.item:
        text += f" of {'positive ' if option.positive_items else ''}{'sections' if option.item is dict else 'numbers'}"
    low = (f"[{option.minimum:g}", f">= {option.minimum:g}") if option.minimum is not None else None
    low = (f"({option.above:g}", f"> {option.above:g}") if option.above is not None else low
    high = (f"{option.maximum:g}]", f"<= {option.maximum:g}") if option.maximum is not None else None
    high = (f"{option.below:g})", f"< {option.below:g}") if option.below is not None else high
    if low and high:
        text += f" in {low[0]}, {high[0]}"
    elif low or high:
        text += f" {(low or high)[1]}"
    text += "".join(f", or {value}" for value in option.also)
    return text + (", or null" if option.null else "")


def _is(value: Any, kind: type) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if kind is list:  # a tuple given from Python is a list to YAML
        return isinstance(value, (list, tuple))
    return isinstance(value, kind)


def _within(value: float, option: Option) -> bool:
    return not (
        (option.minimum is not None and value < option.minimum) or (option.maximum is not None and value > option.maximum)
        or (option.above is not None and value <= option.above) or (option.below is not None and value >= option.below)
    )


def check_value(key: str, value: Any, option: Option, section: Mapping[str, Any] = {}) -> None:
    """Raise a ConfigError unless ``value`` fits ``option`` (``section``: the keys beside it, for its rule)."""
    wanted = f"it must be {describe(option)}"
    if value is None:
        if option.null:
            return
        raise ConfigError(key, f"is null; {wanted}", f"set {key}=<value>")
    if any(value == word and type(value) is type(word) for word in option.also):
        return
    kinds = option.kind if isinstance(option.kind, tuple) else (option.kind,)
    if not any(_is(value, kind) for kind in kinds):
        raise ConfigError(key, f"got {value!r}; {wanted}", f"set e.g. {key}={_example(option)}")
    if option.choices and value not in option.choices:
        hint = nearest(str(value), [str(c) for c in option.choices])
        raise ConfigError(key, f"got {value!r}; {wanted}", f"did you mean {key}={hint}?" if hint else f"set {key}={_example(option)}")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and not _within(value, option):
        raise ConfigError(key, f"got {value!r}; {wanted}", f"set e.g. {key}={_example(option)}")
    if isinstance(value, (list, tuple)):
        if option.length is not None and len(value) != option.length:
            raise ConfigError(key, f"got {len(value)} values {value!r}; {wanted}", f"give {option.length} values")
        if option.item is not None and not value and option.length is None:
            raise ConfigError(key, f"is empty; {wanted}", "give at least one value")
        for index, item in enumerate(value):
            if option.item is not None and not _is(item, option.item):
                raise ConfigError(f"{key}[{index}]", f"got {item!r}; {wanted}", "fix that entry")
            if option.item in (int, float) and ((option.positive_items and item <= 0) or not _within(item, option)):
                raise ConfigError(f"{key}[{index}]", f"got {item!r}; {wanted}", "fix that entry")
    refusal = option.rule(key, value, section) if option.rule else None
    if refusal:
        raise ConfigError(key, *refusal)


def _example(option: Option) -> str:
    if option.choices:
        return str(option.choices[0]).lower() if isinstance(option.choices[0], bool) else str(option.choices[0])
    if option.kind is list:
        return "[" + ",".join(["1"] * (option.length or 1)) + "]"
    if option.kind is bool:
        return "true"
    if option.also:
        return str(option.also[0])
    if option.minimum is not None and option.minimum >= 1:
        return str(int(option.minimum))
    if _within(1, option):
        return "1"
    # Bounds that leave out 1 (a momentum in [0, 1)): a value between them.
    low = option.minimum if option.minimum is not None else option.above
    high = option.maximum if option.maximum is not None else option.below
    if low is not None and high is not None:
        return f"{(low + high) / 2:g}"
    return f"{low + 1:g}" if low is not None else f"{high - 1:g}"


def check_section(section: Any, schema: Mapping[str, Any], where: str, allow_extra: bool = False) -> None:
    """Check a fixed section against its schema: no unknown or missing keys, every value valid."""
    if not isinstance(section, Mapping):
        raise ConfigError(where, f"must be a mapping, got {section!r}")
    for key in section:
        if key not in schema and not allow_extra:
            hint = nearest(str(key), schema)
            raise ConfigError(
                f"{where}.{key}" if where else str(key), "is not a known option",
                f"did you mean {where + '.' if where else ''}{hint}?" if hint else f"known: {', '.join(schema)}",
            )
    for key, option in schema.items():
        name = f"{where}.{key}" if where else key
        if key not in section:
            if isinstance(option, Option) and option.null:
                continue
            raise ConfigError(name, "is missing", f"add {name}=<value>")
        value = section[key]
        if option == "target":
            if not isinstance(value, Mapping) or "_target_" not in value:
                raise ConfigError(name, "must be a section with a _target_ naming its class", f"choose one with {name}=<option>")
            if key in RESERVED:
                check_section({k: v for k, v in value.items() if k in RESERVED[key]}, RESERVED[key], name, allow_extra=True)
        elif isinstance(option, dict):
            check_section(value, option, name)
        else:
            check_value(name, value, option, section)


def resolved_mapping(cfg: Any) -> dict:
    """A config (DictConfig or mapping) as a plain dict, interpolations resolved (one-line error if one cannot be)."""
    if isinstance(cfg, DictConfig):
        try:
            return OmegaConf.to_container(cfg, resolve=True)
        except Exception as error:  # an interpolation that cannot resolve, e.g. ${oc.env:...}
            raise ConfigError(getattr(error, "full_key", "config") or "config", str(error).splitlines()[0], "fix that value") from None
    return dict(cfg)


def check_training_values(cfg: Mapping[str, Any]) -> None:
    """Relations between keys that each alone are valid."""
    trainer, inference = cfg["trainer"], cfg["inference"]
    if trainer["device"] == "cuda" or trainer["cuda_graph"]:
        import torch

        if not torch.cuda.is_available():
            key = "trainer.device" if trainer["device"] == "cuda" else "trainer.cuda_graph"
            raise ConfigError(key, "needs CUDA, but PyTorch sees no CUDA device on this machine", "use trainer.device=auto (or cpu) and trainer.cuda_graph=false")
    check_inference_values(inference)


def check_inference_values(inference: Mapping[str, Any]) -> None:
    if any(s > c for s, c in zip(inference["stride"], inference["crop_size"])):
        raise ConfigError(
            "inference.stride", f"{inference['stride']} is larger than inference.crop_size {inference['crop_size']}",
            "windows would leave gaps: use a stride of at most the crop size",
        )


def validate_train_config(cfg: Any) -> dict:
    """The composed training config as plain data, or a ConfigError for the first problem."""
    data = {k: v for k, v in resolved_mapping(cfg).items() if k != "hydra"}
    check_section(data, TRAIN, "")
    refuse_non_finite(data, "")  # what the schema of a class's section does not see
    check_training_values(data)
    return data


def validate_eval_config(cfg: Any) -> dict:
    """The evaluation options (not the stored training config, which ``checkpoint_config`` checks)."""
    data = {k: v for k, v in resolved_mapping(cfg).items() if k in EVAL}
    check_section(data, EVAL, "")
    refuse_non_finite(data, "")
    check_inference_values(data["inference"])
    return data
