"""Inference modes: whole vs sliding window, overlap averaging, flip and multi-scale TTA."""

import pytest
import torch
from torch import nn

from recallseg.evaluation.inference import (
    Inference,
    InferenceSettings,
    slide_logits,
    whole_logits,
    window_starts,
)


def pointwise_model(classes: int = 5, seed: int = 0) -> nn.Module:
    """A 1x1 convolution: every output pixel depends only on its input pixel (exactly translation-equivariant)."""
    torch.manual_seed(seed)
    return nn.Conv2d(3, classes, kernel_size=1).eval()


class WindowMean(nn.Module):
    """Each output pixel is the mean of the input's first channel over the whole window."""

    def forward(self, x):
        return x[:, :1].mean(dim=(2, 3), keepdim=True).expand(-1, 1, *x.shape[-2:])


class ShiftRight(nn.Module):
    """Not flip-symmetric: output pixel (i, j) is the input at (i, j - 1) (0 at the left border)."""

    def forward(self, x):
        return nn.functional.pad(x[..., :-1], (1, 0))


def test_window_starts_cover_the_axis_and_end_flush():
    assert window_starts(10, 4, 3) == [0, 3, 6]
    assert window_starts(11, 4, 3) == [0, 3, 6, 7]
    assert window_starts(4, 4, 2) == [0]
    assert window_starts(3, 4, 2) == [0]


@pytest.mark.parametrize("size", [(64, 96), (50, 77), (20, 30)])
def test_slide_equals_whole_for_a_pointwise_model(size):
    model = pointwise_model()
    x = torch.randn(2, 3, *size)
    whole = whole_logits(model, x)
    slide = slide_logits(model, x, crop_size=(32, 48), stride=(21, 30), window_batch=3)
    assert slide.shape == whole.shape == (2, 5, *size)  # (20, 30) is smaller than a window: the window shrinks to it
    torch.testing.assert_close(slide, whole, atol=1e-5, rtol=1e-5)


def test_overlapping_windows_are_averaged():
    # One row of width 6, windows of width 4 every 2: [0:4] and [2:6]. Input = column index,
    # so the windows' means are 1.5 and 3.5, and the two middle columns see both windows.
    x = torch.arange(6, dtype=torch.float32).view(1, 1, 1, 6).expand(1, 3, 1, 6)
    out = slide_logits(WindowMean(), x, crop_size=(1, 4), stride=(1, 2), multiple=1)
    expected = torch.tensor([1.5, 1.5, (1.5 + 3.5) / 2, (1.5 + 3.5) / 2, 3.5, 3.5])
    torch.testing.assert_close(out[0, 0, 0], expected)


def test_three_way_overlap_and_a_flush_last_window():
    # Width 7, windows of 4 every 2: [0:4], [2:6] and the flush [3:7]; means 1.5, 3.5, 4.5.
    x = torch.arange(7, dtype=torch.float32).view(1, 1, 1, 7).expand(1, 3, 1, 7)
    out = slide_logits(WindowMean(), x, crop_size=(1, 4), stride=(1, 2), multiple=1)
    a, b, c = 1.5, 3.5, 4.5
    expected = torch.tensor([a, a, (a + b) / 2, (a + b + c) / 3, (b + c) / 2, (b + c) / 2, c])
    torch.testing.assert_close(out[0, 0, 0], expected)


def test_window_batch_does_not_change_the_result():
    model = pointwise_model()
    x = torch.randn(3, 3, 70, 90)
    one = slide_logits(model, x, (32, 32), (20, 20), window_batch=1)
    many = slide_logits(model, x, (32, 32), (20, 20), window_batch=64)
    torch.testing.assert_close(one, many)


def test_flip_tta_of_a_symmetric_image_is_symmetric():
    x = torch.randn(1, 3, 8, 6)
    x = x + x.flip(-1)  # mirror-symmetric input
    plain = Inference(InferenceSettings(size_multiple=1))(ShiftRight(), x)
    flipped = Inference(InferenceSettings(flip=True, size_multiple=1))(ShiftRight(), x)
    assert not torch.allclose(plain, plain.flip(-1))  # the model itself is not symmetric
    torch.testing.assert_close(flipped, flipped.flip(-1))
    torch.testing.assert_close(flipped, (plain + plain.flip(-1)) / 2)


def test_flip_tta_leaves_a_pointwise_model_unchanged():
    model = pointwise_model()
    x = torch.randn(2, 3, 40, 56)
    torch.testing.assert_close(Inference(InferenceSettings(flip=True))(model, x), whole_logits(model, x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mode", ["whole", "slide"])
def test_multi_scale_returns_logits_at_the_input_size(mode):
    model = pointwise_model(classes=4)
    x = torch.randn(2, 3, 37, 53)
    settings = InferenceSettings(mode=mode, crop_size=(32, 32), stride=(24, 24), scales=[0.75, 1.0, 1.25], flip=True)
    out = Inference(settings)(model, x)
    assert out.shape == (2, 4, 37, 53) and out.dtype == torch.float32
    # A pointwise model commutes with resizing up to interpolation error: close to the single-scale logits.
    assert (out - whole_logits(model, x)).abs().mean() < 0.5


def test_settings_reject_nonsense_with_the_config_schemas_messages():
    """The settings are checked by the schema's rules: the same message as a bad eval.yaml value."""
    from recallseg.errors import ConfigError

    cases = [
        (dict(mode="tiles"), "inference.mode: got 'tiles'; it must be one of whole, slide"),
        (dict(crop_size=(32, 32), stride=(48, 16)), "inference.stride: [48, 16] is larger than inference.crop_size [32, 32]: windows would leave gaps"),
        (dict(scales=[]), "inference.scales: is empty"),
        (dict(crop_size=(0, 8)), "inference.crop_size[0]: got 0"),
        (dict(window_batch=0), "inference.window_batch: got 0"),
    ]
    for options, message in cases:
        with pytest.raises(ConfigError) as info:
            InferenceSettings(**options)
        assert str(info.value).startswith(message), str(info.value)
    with pytest.raises(ConfigError, match=r"^inference.crop: is not a known option; did you mean inference.crop_size\?$"):
        InferenceSettings.from_config({"mode": "slide", "crop": 3})
    assert InferenceSettings(crop_size=64, stride=32).crop_size == (64, 64)  # one number: a square


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_inference_and_evaluation_never_synchronise_with_the_host():
    from torch.utils.data import DataLoader

    from recallseg.evaluation.loop import evaluate
    from recallseg.runtime.device import init_runtime
    from recallseg.runtime.normalize import Normalizer

    runtime = init_runtime("cuda", "bf16", False)
    model = pointwise_model(classes=4).cuda()
    images = torch.randint(0, 255, (6, 40, 56, 3), dtype=torch.uint8)
    masks = torch.randint(0, 4, (6, 40, 56))
    loader = DataLoader(list(zip(images, masks)), batch_size=2)
    predict = Inference(InferenceSettings(mode="slide", crop_size=(32, 32), stride=(16, 16), flip=True, scales=[0.75, 1.0]))
    normalizer = Normalizer([0.5] * 3, [0.25] * 3, runtime)
    evaluate(model, loader, normalizer, runtime, 4, 255, predict=predict, progress=False)  # warm-up
    torch.cuda.set_sync_debug_mode("error")
    try:
        evaluate(model, loader, normalizer, runtime, 4, 255, predict=predict, progress=False)
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.parametrize("crop", [(96, 192), (512, 1024), (128, 160)])
def test_a_window_at_least_the_image_is_whole_image_inference_exactly(crop):
    """A window as large as the image or larger is clamped to it: slide gives exactly the whole-image
    logits of a real (not pointwise) model. The default 512x1024 window on a 96x192 image would
    otherwise predict on a padded 512x1024 canvas; a window larger in one axis only still slides
    along the other."""
    from recallseg.models import build_model

    torch.manual_seed(0)
    model = build_model({"_target_": "segmentation_models_pytorch.create_model", "arch": "DeepLabV3Plus", "encoder_name": "resnet18",
                         "encoder_weights": None}, 4).eval()  # fmt: skip
    calls = []
    model.register_forward_pre_hook(lambda module, args: calls.append(tuple(args[0].shape[-2:])))
    x = torch.randn(2, 3, 96, 192)
    with torch.no_grad():
        whole = Inference(InferenceSettings(mode="whole"))(model, x)
        calls.clear()
        slide = Inference(InferenceSettings(mode="slide", crop_size=crop, stride=crop))(model, x)
    if crop[1] >= 192:
        assert torch.equal(slide, whole)
        assert calls == [(96, 192)]  # one pass on the image itself, not on a padded canvas
    else:  # 160 < 192 columns: two windows along the width, the height clamped to 96
        assert calls == [(96, 160)]  # both windows (and both images) in one pass
        assert slide.shape == whole.shape
