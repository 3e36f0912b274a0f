"""Models: any segmentation-models-pytorch architecture and encoder, chosen by config."""

from __future__ import annotations

from typing import Any, Mapping

import segmentation_models_pytorch as smp
from omegaconf import DictConfig, OmegaConf
from torch import nn

# Keys of the model config that describe input handling, not the network.
NON_MODEL_KEYS = ("arch", "mean", "std", "output_stride_multiple")


def build_model(cfg: Mapping[str, Any], num_classes: int) -> nn.Module:
    """``smp.create_model(arch, classes=num_classes, **rest)``, with a clear error when weights can't be fetched.

    The default, ``DeepLabV3Plus`` with ``encoder_name=resnet18`` and ``encoder_output_stride=16``,
    is the paper's "DeepLab-ResNet18".
    """
    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    options = {k: v for k, v in cfg.items() if k not in NON_MODEL_KEYS}
    arch = cfg.get("arch", "DeepLabV3Plus")
    try:
        return smp.create_model(arch, classes=num_classes, **options)
    except (KeyError, TypeError) as error:
        raise ValueError(f"cannot build model {arch} with options {options}: {error}") from error
    except Exception as error:  # network and hub errors come in many types; all mean the same to the user
        weights = options.get("encoder_weights")
        if weights is None:
            raise
        encoder = options.get("encoder_name")
        raise RuntimeError(
            f"could not load {weights!r} weights for encoder {encoder!r} ({type(error).__name__}: {error}).\n"
            "This machine probably cannot reach the Hugging Face hub. Either\n"
            "  - pre-download them on a machine with internet access:\n"
            f"      python -c \"import segmentation_models_pytorch as smp; smp.create_model('{arch}', encoder_name='{encoder}', encoder_weights='{weights}')\"\n"
            "    then copy its Hugging Face cache (~/.cache/huggingface, or $HF_HOME) to this machine and set HF_HUB_OFFLINE=1; or\n"
            "  - train from scratch with model.encoder_weights=null."
        ) from error
