"""Build the network a ``model`` config section names.

The section's ``_target_`` is any segmentation-models-pytorch architecture or factory
(``segmentation_models_pytorch.create_model`` with ``arch: DeepLabV3Plus``, the default) or a
model of your own; the other keys are its options, and recallseg adds ``classes``. The keys
``mean``, ``std`` and ``channel_order`` describe the input the network expects (applied on the
device by ``runtime.normalize.Normalizer``) and are not passed on.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Mapping

from torch import nn

from recallseg.config.construct import build, resolved
from recallseg.errors import UserError
from recallseg.models.download_probe import PROBE_SECONDS, reachable

INPUT_KEYS = ("mean", "std", "channel_order")
# Where the error about ImageNet weights that cannot be had sends the user.
PRETRAINED_HELP = "docs/training.md#pretrained-encoders"


def network_options(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The section without its input-description keys."""
    return {key: value for key, value in resolved(cfg).items() if key not in INPUT_KEYS}


def without_downloads(options: Mapping[str, Any]) -> dict[str, Any]:
    """The options with every weight download turned off (``*_weights`` and ``pretrained`` keys): for
    rebuilding a checkpoint's model, whose weights come from the checkpoint itself."""
    return {key: (None if key.endswith("weights") else False if key == "pretrained" else value) for key, value in options.items()}


def downloads_weights(options: Mapping[str, Any]) -> bool:
    """Whether building ``options`` fetches pretrained weights (a ``*_weights`` or ``pretrained`` option set)."""
    return any(value for key, value in options.items() if key.endswith("weights") or key == "pretrained")


def hub_reachable(timeout: float = PROBE_SECONDS) -> bool:
    """Whether the Hugging Face hub ($HF_ENDPOINT) answers within ``timeout`` seconds."""
    from huggingface_hub import constants

    return reachable(constants.ENDPOINT, timeout)


@contextlib.contextmanager
def hub_cache_only() -> Iterator[None]:
    """Hugging Face hub downloads read the local cache and never the network, as with HF_HUB_OFFLINE=1
    (the client reads that variable once, at import, into ``constants.HF_HUB_OFFLINE``)."""
    from huggingface_hub import constants

    offline = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = offline


def input_divisor(model: nn.Module) -> int | None:
    """What the sides of the network's input must be multiples of, as the network declares it
    (segmentation-models-pytorch's ``requires_divisible_input_shape`` and encoder stride); None
    for a network that takes any size or does not say."""
    if not getattr(model, "requires_divisible_input_shape", False):
        return None
    stride = getattr(getattr(model, "encoder", None), "output_stride", None)
    return int(stride) if isinstance(stride, int) and stride > 1 else None


def build_model(
    cfg: Mapping[str, Any], num_classes: int, *, trusted: bool = True, named_by_user: frozenset[str] = frozenset(), offline: bool = False
) -> nn.Module:
    """The network of ``cfg`` for ``num_classes`` classes; ``offline`` never downloads weights."""
    options = network_options(cfg)
    if offline:
        options = without_downloads(options)
    # Without a hub to reach, weights come from the cache at once, or the build fails at once.
    reachable = not downloads_weights(options) or hub_reachable()
    try:
        with contextlib.nullcontext() if reachable else hub_cache_only():
            return build(options, "model", kind=nn.Module, trusted=trusted, named_by_user=named_by_user, classes=num_classes)
    except UserError:
        raise
    except Exception as error:  # network and hub errors come in many types; all mean the same to the user
        weights = options.get("encoder_weights")
        if not weights:
            raise
        encoder = options.get("encoder_name")
        why = "the Hugging Face hub cannot be reached and they are not in its cache" if not reachable else (
            f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        )
        raise UserError(
            f"model.encoder_weights: could not load {weights!r} weights for encoder {encoder!r} ({why}); pre-download them "
            f"where there is network access and copy the Hugging Face cache here (see {PRETRAINED_HELP}), "
            "or train from scratch with model.encoder_weights=null"
        ) from None
