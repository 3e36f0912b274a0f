"""A resumed run's config: the one its checkpoint stores, with what the command line names again.

A run continues from its run directory alone (``python train.py resume=auto hydra.run.dir=<run>``):
its config is the one stored in the checkpoint it continues, not the defaults. Only what the
user types on the command line (Hydra's task overrides, ``HydraConfig.get().overrides.task``)
replaces a stored value, and then under the rules of what may change on resume
(``resume_changes``: ``trainer.max_iters`` may grow, the classes may not change):

- ``key=value``, ``+key=value`` and ``++key=value`` set that key; ``~key`` removes it.
- ``group=option`` (``loss=ce``, ``dataset=cityscapes``) replaces that whole section with the
  group's file as this command line composes it: two datasets' keys are never merged. A group
  that sets other sections (``experiment=...``, ``protocol=...``) sets the keys it changes from
  the defaults, and replaces whole each section whose option it chooses.
- ``output_dir``, ``resume`` and ``trainer.stop_after`` belong to one invocation: they always come
  from this one, so a run stopped by ``trainer.stop_after`` continues to ``trainer.max_iters``.
- A key of a fixed section (``trainer``, ``evaluation``, ...) that the stored config lacks, as one
  written by an older recallseg does, takes its default.
- A key whose config value is another key's (``evaluation.num_workers: ${trainer.num_workers}``)
  follows that key when it is typed again, unless the stored run had given the two different values.

The values come from Hydra's composition of this command line, so the user's own interpolations
have their values. The stored config stays data: nothing in it is resolved, and the trainer
builds its targets as stored data (``config.construct.Trust``), except the targets the user names.
"""

from __future__ import annotations

import copy
from typing import Any, Iterable, Mapping

from recallseg.checkpoints.format import CheckpointError
from recallseg.config.compose import composed_choices, flatten
from recallseg.config.construct import targets
from recallseg.config.files import config_dir
from recallseg.config.schema import TRAIN

# Keys of one invocation: where it writes, what it continues from, when it stops early.
INVOCATION_KEYS = ("output_dir", "resume", "trainer.stop_after")
FIXED_SECTIONS = tuple(key for key, schema in TRAIN.items() if isinstance(schema, dict))
_ABSENT = object()


def _get(node: Any, dotted: str) -> Any:
    for key in dotted.split("."):
        if not isinstance(node, Mapping) or key not in node:
            return _ABSENT
        node = node[key]
    return node


def _set(node: dict, dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for key in parents:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[last] = copy.deepcopy(value)


def _delete(node: dict, dotted: str) -> None:
    *parents, last = dotted.split(".")
    parent = _get(node, ".".join(parents)) if parents else node
    if isinstance(parent, dict):
        parent.pop(last, None)


def _section(key: str) -> str:
    """The section a config group (``group``, ``group@package``, ``+group``) writes."""
    return key.lstrip("+~").split("@")[-1]


def group_keys(groups: list[str], sections: Iterable[str]) -> tuple[set[str], set[str]]:
    """``(sections replaced whole, other keys set)`` by the config groups chosen on the command line."""
    sections = set(sections)
    chosen, chosen_options = composed_choices("train", groups)
    default, default_options = composed_choices("train", [])
    whole = {_section(override.split("=", 1)[0]) for override in groups} & sections
    whole |= {_section(group) for group, option in chosen_options.items() if default_options.get(group) != option} & sections
    before = flatten(default)
    keys = {key for key, value in flatten(chosen).items() if key.split(".")[0] not in whole and before.get(key, _ABSENT) != value}
    return whole, keys


def resumed_config(
    stored: Any, composed: Mapping[str, Any], typed: Iterable[str], path: Any, links: Mapping[str, str] | None = None
) -> tuple[dict, frozenset[str]]:
    """The config a run continuing the checkpoint at ``path`` trains with: its ``stored`` config with
    the ``typed`` overrides taken from ``composed`` (this command line's config, resolved) and the
    keys ``links`` ties to them (``config.compose.interpolation_links``); and the targets the user named."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if not isinstance(stored, dict) or not stored:
        raise CheckpointError(f"{path}: it holds no config, so the run it continues is unknown; give a checkpoint written by recallseg train")
    config = copy.deepcopy(stored)
    named: set[str] = set()
    for key, value in composed.items():  # what an older recallseg did not store: the defaults
        if key not in config:
            config[key] = copy.deepcopy(value)
            named |= {target for _, target in targets(value, key)}  # recallseg's own config files
        elif key in FIXED_SECTIONS and isinstance(value, dict) and isinstance(config[key], dict):
            config[key] = {**copy.deepcopy(value), **config[key]}
    parsed = OverridesParser.create().parse_overrides(list(typed))
    groups = [o for o in parsed if "." not in o.key_or_group and (config_dir() / o.key_or_group.split("@")[0]).is_dir()]
    sections = [key for key, value in composed.items() if isinstance(value, dict)]
    whole, keys = group_keys([o.input_line for o in groups], sections) if groups else (set(), set())
    for section in whole:
        config[section] = copy.deepcopy(composed[section])
        named |= {target for _, target in targets(composed[section], section)}
    for override in parsed:
        if override in groups:
            continue
        key = override.key_or_group
        if override.is_delete():
            _delete(config, key)
        else:
            keys.add(key)
    for key, source in (links or {}).items():
        changed = source in keys or source.split(".")[0] in whole
        if changed and key not in keys and _get(stored, key) == _get(stored, source):
            keys.add(key)
    for key in sorted(keys) + list(INVOCATION_KEYS):
        value = _get(composed, key)
        if value is _ABSENT:
            _delete(config, key)
            continue
        _set(config, key, value)
        where, _, last = key.rpartition(".")
        named |= {target for _, target in targets({last: value}, where)}  # ``x._target_=...`` included
    return config, frozenset(named)
