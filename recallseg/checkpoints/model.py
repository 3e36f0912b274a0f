"""A checkpoint's model, rebuilt from its stored config and loaded with its weights.

``CheckpointModel(path)`` is the way to use a trained model in your own code::

    from recallseg.checkpoints import CheckpointModel

    loaded = CheckpointModel("outputs/run/checkpoints/best.pt", device="cpu")
    logits = loaded.model(loaded.normalizer(uint8_batch_nhwc))   # [N, C, H, W]

That is the bare network; ``evaluation.model_input`` puts it inside the input pipeline its
validation used (resize, padding, logits at the image's size), as recallseg-predict does.

The stored config is data: only recallseg's, segmentation-models-pytorch's and albumentations'
classes are built from it, and no weights are downloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from recallseg.checkpoints.format import CheckpointError, require_finite_weights
from recallseg.checkpoints.stored_config import checkpoint_config
from recallseg.config.construct import resolved
from recallseg.models import build_model
from recallseg.runtime.device import Runtime, init_runtime
from recallseg.runtime.normalize import Normalizer, input_statistics


def check_classes(state: dict, classes: list[str], checkpoint_path: Path, where: str) -> None:
    """The dataset must have the checkpoint's classes, by name and order (not just as many)."""
    stored = list(state.get("classes") or [])
    if stored != list(classes):
        detail = f"{len(stored)} vs {len(classes)} classes" if len(stored) != len(classes) else f"first difference: {next(f'{a!r} vs {b!r}' for a, b in zip(stored, classes) if a != b)}"
        raise CheckpointError(
            f"{checkpoint_path}: it was trained for classes {stored} but {where} has {list(classes)} ({detail}); evaluate it on "
            "data with the same classes, mapped to them if needed (a Synthia model on Cityscapes: dataset.class_set=synthia16)"
        )


def model_from_checkpoint(
    state: dict, cfg: Mapping[str, Any], num_classes: int, runtime: Runtime, checkpoint_path: Path, named_by_user: frozenset[str] = frozenset()
) -> torch.nn.Module:
    """The checkpoint's model, built from its stored (untrusted) ``model`` section without downloading
    anything, with its weights, on the runtime's device, in eval mode."""
    require_finite_weights(state, checkpoint_path)
    model_cfg = resolved(cfg["model"])
    model = build_model(model_cfg, num_classes, trusted=False, named_by_user=named_by_user, offline=True)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as error:
        first = str(error).splitlines()[0]
        raise CheckpointError(
            f"{checkpoint_path}: its weights do not fit model {model_cfg.get('_target_')} ({first}); do not override model.* "
            "when evaluating a checkpoint"
        ) from None
    model.to(runtime.device)
    if runtime.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model.eval()


class CheckpointModel:
    """A checkpoint's network on a device in eval mode, with what inference around it needs.

    The checkpoint's stored config is data (``checkpoints.stored_config``): only recallseg's,
    segmentation-models-pytorch's and albumentations' classes are built from it, and no weights
    are downloaded."""

    def __init__(self, path: str | Path, device: str = "auto", amp: str = "auto", overrides: Sequence[str] = ()):
        self.path = Path(path)
        self.state, self.config, named = checkpoint_config(self.path, overrides)
        self.classes = list(self.state.get("classes") or [])
        if not self.classes:
            raise CheckpointError(f"{self.path} does not list its classes; was it written by recallseg train?")
        self.runtime = init_runtime(device, amp, "auto")
        self.model = model_from_checkpoint(self.state, self.config, len(self.classes), self.runtime, self.path, named)
        self.mean, self.std, self.channel_order = input_statistics(self.config["model"])

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

    @property
    def normalizer(self) -> Normalizer:
        """The input step the model was trained with (uint8 ``[N, H, W, 3]`` to its float input)."""
        return Normalizer(self.mean, self.std, self.runtime, self.channel_order)
