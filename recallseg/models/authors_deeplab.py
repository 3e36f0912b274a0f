"""The recall-loss paper's "DeepLab-ResNet18", rebuilt from torchvision and smp parts.

The network the paper's code trains is not smp's DeepLabV3+ with a ResNet-18 encoder
(``model=deeplabv3plus_resnet18``, 12.3 M parameters). What its code builds, and what this
module rebuilds (``model=deeplab_authors``), is:

- **encoder** ("resnet18" in their code): a ResNet of *Bottleneck* blocks, 2 + 2 + 2 in the first
  three stages (64/128/256 planes, outputs of 256/512/1024 channels, strides 1/2/2) and a
  multi-grid last stage of 3 Bottleneck blocks (512 planes, 2048 channels) with stride 1 and
  dilations 2 x (1, 2, 4) = 2, 4, 8: output stride 16. 9 Bottleneck blocks, 18.41 M parameters.
  It is torchvision's ``ResNet(Bottleneck, [2, 2, 2, 3])`` with the last stride replaced by
  dilation and the multi-grid dilations set per block, registered as smp encoder
  ``authors_resnet18``.
- **ASPP** (smp's module): a 1x1 branch, three 3x3 branches at rates 6/12/18 (plain, not
  separable, convolutions), image pooling, each 256 channels with BatchNorm and ReLU, then a
  1x1 projection to 256 with BatchNorm, ReLU and dropout 0.5.
- **decoder**: the stride-4 features (layer1, 256 channels) through 1x1 conv to 48 channels
  (BatchNorm, ReLU); the ASPP output upsampled (bilinear, corners aligned) to their size and
  concatenated (304 channels); 3x3 conv 256 + BatchNorm + ReLU + dropout 0.5, 3x3 conv 256 +
  BatchNorm + ReLU + dropout 0.1, 1x1 conv to the classes (with bias); then bilinear
  upsampling (corners aligned) to the input size.

35.25 M parameters at 19 classes (35.24 M at 16). smp's own ``DeepLabV3PlusDecoder`` cannot
express this: its 3x3 convolution after the ASPP and the one after the concatenation are always
separable, the second 3x3 convolution sits at stride 16 instead of stride 4, and it has no
decoder dropout. Unlike smp models, any input size works (the final upsampling goes to the
input's size), as in the paper's code: the Cityscapes protocol crops 769x769.

``encoder_weights: torchvision_resnet18`` is the paper code's partial ImageNet initialisation:
the tensors of torchvision's ImageNet ResNet-18 whose name and shape match a tensor of this
encoder are copied (43 parameter tensors, 77 with BatchNorm running statistics: 6.28 M of the
encoder's 18.41 M parameters, 34%); the others keep their random initialisation. The file is
downloaded once into torch's hub cache (``$TORCH_HOME``); without network access building the
model stops with one line saying how to provide it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from segmentation_models_pytorch.decoders.deeplabv3.decoder import ASPP
from segmentation_models_pytorch.encoders import encoders as smp_encoders
from segmentation_models_pytorch.encoders._base import EncoderMixin
from torch import nn
from torchvision.models.resnet import Bottleneck, ResNet

from recallseg.errors import ConfigError, UserError
from recallseg.models.download_probe import reachable

log = logging.getLogger(__name__)

ENCODER_NAME = "authors_resnet18"
MULTI_GRID = (1, 2, 4)
TORCHVISION_RESNET18_URL = "https://download.pytorch.org/models/resnet18-f37072fd.pth"
WEIGHT_CHOICES = ("torchvision_resnet18",)


class AuthorsResNetEncoder(ResNet, EncoderMixin):
    """The paper code's "resnet18": Bottleneck stages [2, 2, 2] and a multi-grid last stage, output stride 16.

    ``forward`` returns smp's feature list: the input and the outputs of the stem (stride 2),
    layer1 (stride 4), layer2 (8), layer3 (16) and layer4 (16, dilated).
    """

    def __init__(self, out_channels: Sequence[int], depth: int = 5, output_stride: int = 16, multi_grid: Sequence[int] = MULTI_GRID):
        if depth != 5:
            raise ConfigError("model.encoder_depth", f"the authors' encoder has depth 5, got {depth}", "remove the key")
        if output_stride not in (16, 32):  # 32: smp's default request, meaning "as built"
            raise ConfigError("model.encoder_output_stride", f"the authors' encoder has output stride 16, got {output_stride}", "remove the key")
        super().__init__(Bottleneck, [2, 2, 2, len(multi_grid)], replace_stride_with_dilation=[False, False, True])
        del self.fc
        del self.avgpool
        for block, grid in zip(self.layer4, multi_grid):
            conv = block.conv2
            conv.dilation, conv.padding = (2 * grid, 2 * grid), (2 * grid, 2 * grid)
        self._depth = depth
        self._in_channels = 3
        self._out_channels = list(out_channels)
        self._output_stride = 16

    @property
    def output_stride(self) -> int:
        return 16

    def make_dilated(self, output_stride: int) -> None:
        """The stride-16 multi-grid layout is built in; another output stride is not the authors' network."""
        if output_stride != 16:
            raise ConfigError("model.encoder_output_stride", f"the authors' encoder has output stride 16, got {output_stride}", "remove the key")

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = [x]
        x = self.relu(self.bn1(self.conv1(x)))
        features.append(x)
        x = self.layer1(self.maxpool(x))
        features.append(x)
        for layer in (self.layer2, self.layer3, self.layer4):
            x = layer(x)
            features.append(x)
        return features

    def load_state_dict(self, state_dict, **kwargs):
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith("fc.")}
        return super().load_state_dict(state_dict, **kwargs)


def register_encoder() -> None:
    """Make ``authors_resnet18`` an smp encoder (``smp.encoders.get_encoder("authors_resnet18")``)."""
    smp_encoders.setdefault(
        ENCODER_NAME,
        {"encoder": AuthorsResNetEncoder, "pretrained_settings": {}, "params": {"out_channels": (3, 64, 256, 512, 1024, 2048)}},
    )


register_encoder()


def torchvision_resnet18_state() -> dict[str, torch.Tensor]:
    """torchvision's ImageNet ResNet-18 tensors, from torch's hub cache or downloaded once; a UserError offline."""
    target = Path(torch.hub.get_dir()) / "checkpoints" / TORCHVISION_RESNET18_URL.rsplit("/", 1)[1]
    fix = (
        f"download {TORCHVISION_RESNET18_URL} where there is network access and put it at {target} "
        "(or set TORCH_HOME), or train from scratch with model.encoder_weights=null"
    )
    # torch's download has no deadline: ask the server first, so that a machine without network fails at once.
    if not target.exists() and not reachable(TORCHVISION_RESNET18_URL):
        raise UserError(f"model.encoder_weights: torchvision's ImageNet ResNet-18 is not in torch's hub cache and its server cannot be reached; {fix}")
    try:
        return torch.hub.load_state_dict_from_url(TORCHVISION_RESNET18_URL, map_location="cpu", progress=False, check_hash=False, weights_only=True)
    except Exception as error:  # URLError, socket errors, HTTP errors, a truncated file: all mean the same here
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UserError(f"model.encoder_weights: could not get torchvision's ImageNet ResNet-18 ({type(error).__name__}: {reason}); {fix}") from None


def transplant_matching(module: nn.Module, source: dict[str, torch.Tensor]) -> list[str]:
    """Copy every tensor of ``source`` whose name and shape match one of ``module``'s; the copied names."""
    own = module.state_dict()
    copied = [name for name, value in source.items() if name in own and tuple(own[name].shape) == tuple(value.shape)]
    with torch.no_grad():
        for name in copied:
            own[name].copy_(source[name])
    return copied


class AuthorsDeepLabV3Plus(nn.Module):
    """The paper code's DeepLabV3+ (see the module docstring): ``logits = model(images)`` at the input's size.

    Args:
        classes: number of output classes.
        encoder_name: an smp encoder with 2048-channel stride-16 features and 256-channel
            stride-4 ones; ``authors_resnet18`` (the default) is the paper's.
        encoder_weights: ``null`` (random initialisation) or ``torchvision_resnet18`` (the paper
            code's partial ImageNet transplant).
        atrous_rates: the three ASPP rates (6, 12, 18).
        aspp_dropout: dropout after the ASPP projection (0.5).
        decoder_dropout: dropout after the decoder's first and second 3x3 convolutions (0.5, 0.1).
        decoder_channels: channels of the ASPP and decoder (256).
        low_level_channels: channels the stride-4 features are reduced to (48).
    """

    def __init__(
        self,
        classes: int,
        encoder_name: str = ENCODER_NAME,
        encoder_weights: str | None = None,
        atrous_rates: Sequence[int] = (6, 12, 18),
        aspp_dropout: float = 0.5,
        decoder_dropout: Sequence[float] = (0.5, 0.1),
        decoder_channels: int = 256,
        low_level_channels: int = 48,
    ):
        super().__init__()
        if encoder_weights is not None and encoder_weights not in WEIGHT_CHOICES:
            raise ConfigError("model.encoder_weights", f"must be null or one of {list(WEIGHT_CHOICES)}, got {encoder_weights!r}")
        if len(tuple(atrous_rates)) != 3 or len(tuple(decoder_dropout)) != 2:
            raise ConfigError("model", f"atrous_rates takes 3 rates and decoder_dropout 2 rates, got {list(atrous_rates)} and {list(decoder_dropout)}")
        from segmentation_models_pytorch.encoders import get_encoder

        self.encoder = get_encoder(encoder_name, in_channels=3, depth=5, weights=None, output_stride=16)
        high, low = self.encoder.out_channels[-1], self.encoder.out_channels[2]
        self.aspp = ASPP(high, decoder_channels, tuple(atrous_rates), separable=False, dropout=float(aspp_dropout))
        self.low_level = nn.Sequential(nn.Conv2d(low, low_level_channels, 1, bias=False), nn.BatchNorm2d(low_level_channels), nn.ReLU())
        first, second = (float(p) for p in decoder_dropout)
        self.decoder = nn.Sequential(
            nn.Conv2d(decoder_channels + low_level_channels, decoder_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(decoder_channels),
            nn.ReLU(),
            nn.Dropout(first),
            nn.Conv2d(decoder_channels, decoder_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(decoder_channels),
            nn.ReLU(),
            nn.Dropout(second),
            nn.Conv2d(decoder_channels, classes, 1),
        )
        for part in (self.aspp, self.low_level, self.decoder[:-1]):  # their init: He-normal convs, BatchNorm 1/0
            for module in part.modules():
                if isinstance(module, nn.Conv2d):
                    nn.init.kaiming_normal_(module.weight)
                elif isinstance(module, nn.BatchNorm2d):
                    nn.init.ones_(module.weight)
                    nn.init.zeros_(module.bias)
        if encoder_weights == "torchvision_resnet18":
            copied = transplant_matching(self.encoder, torchvision_resnet18_state())
            total = sum(p.numel() for p in self.encoder.parameters())
            params = dict(self.encoder.named_parameters())
            share = sum(params[name].numel() for name in copied if name in params)
            log.info(
                "encoder: copied %d torchvision ResNet-18 ImageNet tensors matching by name and shape (%d parameter tensors, "
                "%.2f M of %.2f M parameters, %.0f%%); the rest keeps its random initialisation",
                len(copied), sum(name in params for name in copied), share / 1e6, total / 1e6, 100 * share / total,
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.encoder(x)
        high = self.aspp(features[-1])
        low = self.low_level(features[2])
        high = F.interpolate(high, size=low.shape[-2:], mode="bilinear", align_corners=True)
        logits = self.decoder(torch.cat([high, low], dim=1))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=True)
