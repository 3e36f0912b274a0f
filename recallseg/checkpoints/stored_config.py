"""A checkpoint's stored config, as data, with the user's command-line overrides applied.

Evaluation (and prediction, export) rebuild the dataset and the model from the config stored
in a checkpoint. That config may have been written by someone else, so it is data: only
recallseg's own classes, segmentation-models-pytorch models and albumentations transforms are
built from it (``recallseg.config.construct``), nothing it names is imported otherwise, and no weights
are downloaded (they come from the checkpoint). The user's overrides are applied like Hydra's:

- ``key=value`` replaces a stored key (``dataset.root=...``, ``dataset.split=test``); the key must
  exist (the nearest one is suggested), ``+key=value`` adds one and ``~key`` removes one;
- ``group=option`` (``dataset=cityscapes``) replaces the whole stored section with that config
  group's file, before the key overrides; two datasets' keys are never merged.

What the user names on the command line is theirs to trust: a ``_target_`` given there (or in
a group file they chose) may be any class, and an interpolation they type is resolved (once,
here); the stored strings stay text (``stored_data``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from recallseg.config.files import config_dir
from recallseg.config.compose import compose_checked, dotted_keys
from recallseg.config.construct import check_untrusted_text, targets
from recallseg.errors import ConfigError, nearest
from recallseg.config.schema import MODEL_INPUT, TRAINER, check_value
from recallseg.checkpoints.format import CheckpointError, load_checkpoint
from recallseg.checkpoints.stored_data import escape_interpolations

# The stored sections an evaluation uses (inference, evaluation: how validation padded and scored).
STORED_SECTIONS = ("dataset", "model", "trainer", "paths", "seed", "inference", "evaluation")


def read_checkpoint(path: str | Path) -> dict:
    """A recallseg checkpoint with model weights and the training config (CheckpointError otherwise)."""
    path = Path(path)
    state = load_checkpoint(path)
    if not isinstance(state.get("config"), dict) or "model" not in state:
        raise CheckpointError(f"{path}: it has no model weights or config; give a checkpoint written by recallseg train")
    return state


def _get(node: dict, keys: list[str]) -> Any:
    for key in keys:
        if not isinstance(node, dict) or key not in node:
            raise KeyError(key)
        node = node[key]
    return node


def group_section(group: str, option: str) -> dict:
    """A config group's file composed as training would (interpolations resolved against train.yaml)."""
    from omegaconf import OmegaConf

    if not (config_dir() / group / f"{option}.yaml").is_file():
        options = sorted(p.stem for p in (config_dir() / group).glob("*.yaml"))
        hint = nearest(option, options)
        raise ConfigError(f"{group}={option}", f"there is no {group} config {option!r}", (f"did you mean {group}={hint}? " if hint else "") + f"choices: {', '.join(options)}")
    return OmegaConf.to_container(compose_checked("train", [f"{group}={option}"])[group], resolve=True)


def apply_overrides(stored: dict, overrides: Iterable[str]) -> tuple[dict, set[str]]:
    """The stored config with the overrides applied, and the targets the user named."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    overrides = list(overrides)
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception as error:
        raise ConfigError("command line", " ".join(str(error).split()), "write overrides as key=value") from None
    # The stored (and group) sections are escaped so that the one resolution below, which gives the
    # user's own interpolations their values, keeps every stored string as text.
    config = escape_interpolations({key: stored[key] for key in STORED_SECTIONS if key in stored})
    named: set[str] = set()
    groups = [o for o in parsed if "." not in o.key_or_group and (config_dir() / o.key_or_group).is_dir()]
    for override in groups:  # whole sections first, then key overrides on top
        if override.is_sweep_override():
            raise ConfigError(override.input_line, "sweeps over the stored config are not supported", "evaluate once per value, or sweep over checkpoint=...")
        config[override.key_or_group] = escape_interpolations(group_section(override.key_or_group, str(override.value())))
        named |= {target for _, target in targets(config[override.key_or_group], override.key_or_group)}
    for override in parsed:
        if override in groups:
            continue
        key = override.key_or_group
        if override.is_sweep_override():
            raise ConfigError(override.input_line, "sweeps over the stored config are not supported", "evaluate once per value, or sweep over checkpoint=...")
        *parents, last = key.split(".")
        try:
            parent = _get(config, parents)
        except KeyError:
            parent = None
        exists = isinstance(parent, dict) and last in parent
        if override.is_delete():
            if exists:
                del parent[last]
            continue
        if not exists and not override.is_add():
            hint = nearest(key, dotted_keys(config))
            raise ConfigError(key, "is not a key of the checkpoint's stored config", f"did you mean {hint}?" if hint else "add it with +" + key)
        if parent is None:
            raise ConfigError(key, f"its section {'.'.join(parents)} is not in the checkpoint's stored config", "set the whole section with a config group (e.g. dataset=<option>)")
        value = override.value()
        parent[last] = value
        named |= {target for _, target in targets({last: value}, key.rsplit(".", 1)[0])}
        if last == "_target_":
            named.add(value)
    return resolve_user_values(config), named


def resolve_user_values(config: dict) -> dict:
    """``config`` as plain data: the user's interpolations resolved, stored strings unescaped."""
    from omegaconf import OmegaConf

    try:
        return OmegaConf.to_container(OmegaConf.create(config), resolve=True)
    except Exception as error:
        raise ConfigError("command line", f"an interpolation in the overrides cannot be resolved ({' '.join(str(error).split())})", "fix or remove it") from None


def checkpoint_config(path: str | Path, overrides: Iterable[str] = ()) -> tuple[dict, dict, frozenset[str]]:
    """``(checkpoint state, stored config with overrides, targets the user named)``, checked as data."""
    state = read_checkpoint(path)
    config, named = apply_overrides(state["config"], overrides)
    for section in ("dataset", "model"):
        if not isinstance(config.get(section), dict) or "_target_" not in config[section]:
            raise CheckpointError(f"{path}: its stored config has no {section} section with a _target_; give a checkpoint written by recallseg train")
        check_untrusted_text(config[section], section, named)
    for key in ("device", "amp", "channels_last"):
        check_value(f"trainer.{key}", config.get("trainer", {}).get(key, "auto"), TRAINER[key])
    for key, option in MODEL_INPUT.items():
        if key in config["model"]:
            check_value(f"model.{key}", config["model"][key], option)
    return state, config, frozenset(named)
