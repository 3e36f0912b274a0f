"""Where recallseg's YAML configs live: ``configs/`` in a checkout, ``recallseg/configs`` when installed."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

_CHECKOUT = Path(__file__).resolve().parents[2] / "configs"  # recallseg/config/files.py -> the checkout


def config_dir() -> Path:
    """The folder holding train.yaml, eval.yaml and the config groups."""
    if (_CHECKOUT / "train.yaml").is_file():
        return _CHECKOUT
    return Path(str(resources.files("recallseg.configs")))


def group_options(group: str) -> list[str]:
    """The option names of a config group (``loss`` -> ``["ce", "recall", ...]``)."""
    return sorted(path.stem for path in (config_dir() / group).glob("*.yaml"))
