"""What the key=value tools share: parsing their options, and a checkpoint's model ready for inference."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

from omegaconf import DictConfig, OmegaConf

from recallseg.errors import ConfigError, UserError, nearest


class ToolError(UserError):
    """Bad input to a tool; the message says what to fix."""


def parse_options(argv: Sequence[str], defaults: Mapping[str, Any], required: Sequence[str], usage: str) -> DictConfig:
    """``key=value`` arguments over ``defaults``; unknown keys get the nearest known one."""
    loose = [arg for arg in argv if "=" not in arg]
    if loose or not argv:
        raise ToolError(f"arguments are key=value pairs; usage: {usage}" + (f" (got {loose})" if loose else ""))
    try:
        given = OmegaConf.from_dotlist(list(argv))
    except Exception as error:
        raise ToolError(f"cannot read the arguments ({' '.join(str(error).split())}); usage: {usage}") from None
    for key in given:
        if key not in defaults:
            hint = nearest(str(key), list(defaults))
            raise ConfigError(str(key), "is not a known option", f"did you mean {hint}?" if hint else f"known: {', '.join(defaults)}")
    cfg = OmegaConf.merge(OmegaConf.create(dict(defaults)), given)
    missing = [key for key in required if OmegaConf.is_missing(cfg, key)]
    if missing:
        raise ToolError(f"missing {', '.join(k + '=...' for k in missing)}; usage: {usage}")
    return cfg


def wants_help(argv: Sequence[str], text: str) -> bool:
    """Print ``text`` for -h/--help."""
    if any(arg in ("-h", "--help") for arg in argv):
        print(text.strip())
        return True
    return False


class CheckpointModel:
    """A checkpoint's network on a device in eval mode, with what inference around it needs.

    The checkpoint's stored config is data (``engine.checkpoint_config``): only recallseg's,
    segmentation-models-pytorch's and albumentations' classes are built from it, and no weights
    are downloaded."""

    def __init__(self, path: str | Path, device: str = "auto", amp: str = "auto", overrides: Sequence[str] = ()):
        from recallseg.checkpoints.stored_config import checkpoint_config
        from recallseg.evaluation.score_checkpoint import model_from_checkpoint
        from recallseg.runtime.device import init_runtime

        self.path = Path(path)
        self.state, self.config, named = checkpoint_config(self.path, overrides)
        self.classes = list(self.state.get("classes") or [])
        if not self.classes:
            raise ToolError(f"{self.path} does not list its classes; was it written by recallseg train?")
        self.runtime = init_runtime(device, amp, "auto")
        self.model = model_from_checkpoint(self.state, self.config, len(self.classes), self.runtime, self.path, named)
        model_cfg = self.config["model"]
        self.mean = list(model_cfg.get("mean", (0.485, 0.456, 0.406)))
        self.std = list(model_cfg.get("std", (0.229, 0.224, 0.225)))
        self.channel_order = str(model_cfg.get("channel_order", "rgb"))

    def palette(self) -> list[list[int]] | None:
        """The class colours stored in the checkpoint, else the (already checked) dataset class's."""
        if self.state.get("palette") is not None:
            return self.state["palette"]
        target = self.config["dataset"].get("_target_")
        try:
            from hydra.utils import get_class

            return getattr(get_class(target), "palette", None)
        except Exception:  # optional: colours are generated without it
            return None


def exit_code(run, argv: Sequence[str] | None) -> int:
    """Run ``run(argv)`` under ``user_errors``: 0, or 2 after a one-line error."""
    from recallseg.commands.user_errors import user_errors

    try:
        with user_errors():
            run(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as stop:
        return int(stop.code or 0)
    return 0
