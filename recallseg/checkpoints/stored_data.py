"""The plain data a checkpoint carries (its config, classes, palette, monitor, the run's record), checked once when read.

recallseg saves a run's config resolved, and escapes every literal ``${`` in a stored string the
way OmegaConf reads it back as text (``\\${``). So a string in a recallseg checkpoint never holds
an interpolation. One that does (``${oc.env:HOME}``, ``${oc.create:...}``, ``${oc.decode:...}``)
was put there by editing the file: the file is refused, naming the key, before anything in it
is resolved, imported, opened or read from the environment. Hydra's keys that change what is
called (``_partial_``, ``_args_``, ``_convert_``, ``_recursive_``) and Hydra's own settings
(a ``hydra`` section) are refused the same way: recallseg never stores them.

Reading gives the strings back as written by the user (the escape undone), as plain Python
data that nothing downstream resolves again (``construct.build`` calls stored sections without
OmegaConf).
"""

from __future__ import annotations

import math
import re
from typing import Any

from recallseg.errors import UserError

# The entries of a checkpoint that are plain data (the rest are tensors and their bookkeeping).
DATA_KEYS = ("config", "classes", "palette", "monitor", "run")
MONITORS = ("mIoU", "mAcc", "aAcc", "mPrecision")  # as the trainer stores them (without val/)

# ``${`` after an even number of backslashes (none included) is an interpolation to OmegaConf;
# after an odd number it is text. A literal ``${`` after n backslashes is stored as 2n+1 of them.
_INTERPOLATION = re.compile(r"(?<!\\)(?:\\\\)*\$\{")
_DOLLAR_BRACE = re.compile(r"(\\*)\$\{")


# Modules that moved since checkpoints were first written: a stored ``_target_`` in one of them
# is read as the class's present path, so older checkpoints evaluate and resume as before.
MOVED_MODULES = {
    "recallseg.data.transforms": "recallseg.pipeline.transforms",
    "recallseg.engine.optim": "recallseg.training.optim",
}


class StoredDataError(UserError):
    """A checkpoint's plain data is not what recallseg writes: the file was edited or is foreign."""


def escape_interpolations(value: Any) -> Any:
    """``value`` with every literal ``${`` in its strings escaped, as it is stored."""
    if isinstance(value, str):
        return _DOLLAR_BRACE.sub(lambda m: "\\" * (2 * len(m.group(1)) + 1) + "${", value)
    if isinstance(value, dict):
        return {key: escape_interpolations(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [escape_interpolations(item) for item in value]
    return value


def _unescape(text: str) -> str:
    return _DOLLAR_BRACE.sub(lambda m: "\\" * ((len(m.group(1)) - 1) // 2) + "${", text)


def _refuse(path: Any, key: str, problem: str) -> StoredDataError:
    return StoredDataError(
        f"{path}: {key}: {problem}; recallseg never writes that, so the file was edited or comes from another "
        "program: use a checkpoint written by recallseg train"
    )


def _shown(text: str) -> str:
    return repr(text if len(text) <= 60 else text[:57] + "...")


def read_stored_value(value: Any, key: str, path: Any, *, config: bool = False, plain: bool = False) -> Any:
    """``value`` as plain data with the escape undone; refuses interpolations anywhere, in a config
    Hydra's call-changing keys, and in a config or with ``plain`` anything but None, bool, int,
    float, str, list, dict."""
    if isinstance(value, str):
        if _INTERPOLATION.search(value):
            raise _refuse(path, key, f"holds the interpolation {_shown(value)}, which would be resolved (run) when read")
        return _unescape(value)
    if isinstance(value, dict):
        checked = {}
        for name, item in value.items():
            if not isinstance(name, str):
                raise _refuse(path, key, f"has the key {name!r}, which is not text")
            where = f"{key}.{name}"
            if config and name.startswith("_") and name.endswith("_") and name != "_target_":
                raise _refuse(path, where, "is a Hydra key that changes what is called or how")
            checked[read_stored_value(name, where, path)] = read_stored_value(item, where, path, config=config, plain=plain)
        if config and isinstance(checked.get("_target_"), str):
            checked["_target_"] = present_path(checked["_target_"])
        return checked
    if isinstance(value, (list, tuple)):
        return [read_stored_value(item, f"{key}[{index}]", path, config=config, plain=plain) for index, item in enumerate(value)]
    if value is None or isinstance(value, (bool, int, float)) or not (config or plain):
        return value
    raise _refuse(path, key, f"holds a {type(value).__name__}, where a {'config' if config else 'run record'} holds only text, numbers, lists and mappings")


def present_path(target: str) -> str:
    """``target`` with a module that has moved (``MOVED_MODULES``) replaced by its present one."""
    module, _, name = target.rpartition(".")
    return f"{MOVED_MODULES[module]}.{name}" if module in MOVED_MODULES else target


def read_stored_data(state: dict[str, Any], path: Any) -> dict[str, Any]:
    """``state`` with its plain data checked and unescaped (``StoredDataError`` otherwise)."""
    state = dict(state)
    for key in DATA_KEYS:
        if key in state:
            state[key] = read_stored_value(state[key], key, path, config=key == "config", plain=key == "run")
    config = state.get("config")
    if config is not None and not isinstance(config, dict):
        raise _refuse(path, "config", f"is a {type(config).__name__}, not a mapping")
    if isinstance(config, dict) and "hydra" in config:
        raise _refuse(path, "config.hydra", "holds Hydra's own settings (search paths, launchers, run directories)")
    run = state.get("run")
    if run is not None and not isinstance(run, dict):
        raise _refuse(path, "run", f"is a {type(run).__name__}, not a mapping")
    classes = state.get("classes")
    if classes is not None and (not isinstance(classes, list) or not classes or not all(isinstance(c, str) and c for c in classes)):
        raise _refuse(path, "classes", f"must be a non-empty list of class names, got {_shown(str(classes))}")
    palette = state.get("palette")
    if palette is not None and not _is_palette(palette):
        raise _refuse(path, "palette", f"must be a list of [r, g, b] colours, integers 0-255, got {_shown(str(palette))}")
    monitor = state.get("monitor")
    if monitor is not None and monitor not in MONITORS:
        raise _refuse(path, "monitor", f"must be one of {', '.join(MONITORS)}, got {_shown(str(monitor))}")
    for key, kind in (("iteration", int), ("best_score", (int, float))):
        value = state.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, kind) or (key == "iteration" and value < 0)):
            raise _refuse(path, key, f"must be a {'non-negative integer' if key == 'iteration' else 'number'}, got {_shown(str(value))}")
    if isinstance(state.get("best_score"), float) and math.isnan(state["best_score"]):
        raise _refuse(path, "best_score", "is NaN")
    return state


def _is_palette(palette: Any) -> bool:
    return (
        isinstance(palette, list)
        and all(isinstance(c, list) and len(c) == 3 and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in c) for c in palette)
    )  # fmt: skip
