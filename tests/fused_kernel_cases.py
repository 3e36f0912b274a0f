"""Checks of the fused Triton kernel (``loss.kernel=triton``) against the float64 oracles of
``losses/test_losses`` and against the PyTorch path of the same loss.

Each check takes a device. ``training/test_cuda.py`` runs them on CUDA in-process. On a machine without
a GPU, ``losses/test_losses.py`` runs this file as a script under Triton's interpreter: the
``TRITON_INTERPRET=1`` switch must be set before Triton compiles any kernel, so it gets a
process of its own.

    TRITON_INTERPRET=1 python tests/fused_kernel_cases.py
"""

from __future__ import annotations

import math
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent / "losses"))  # the oracles live beside the loss tests
from test_losses import C, IGNORE, ce_oracle, context, make_batch, recall_oracle, value_and_grad, weighted_ce_oracle

from recallseg.losses import build_loss
from recallseg.losses.fused.statistics import class_ce_statistics

# 24 x 48 = 1152 pixels per image: two blocks of 1024 per image at C = 4, the second partly filled.
MULTI_BLOCK = dict(n=2, h=24, w=48, ignore_fraction=0.25, seed=5)


def recall(device: str, **options):
    return build_loss({"name": "recall", **options}, context()).to(device)


def on(device, logits, target):
    return logits.to(device), target.to(device)


def check_recall_matches_float64_oracle(device):
    for soft in (False, True):
        logits, target = make_batch(**MULTI_BLOCK)
        value, grad = value_and_grad(recall(device, kernel="triton", soft=soft), *on(device, logits, target))
        expected, expected_grad = value_and_grad(lambda x, t: recall_oracle(x, t, soft=soft), logits.double(), target)
        torch.testing.assert_close(value.cpu(), expected, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(grad.cpu(), expected_grad, rtol=1e-4, atol=1e-6)


def check_cross_entropy_matches_float64_oracle(device):
    logits, target = make_batch(**MULTI_BLOCK)
    loss = build_loss({"name": "ce", "kernel": "triton"}, context()).to(device)
    value, grad = value_and_grad(loss, *on(device, logits, target))
    expected, expected_grad = value_and_grad(ce_oracle, logits.double(), target)
    torch.testing.assert_close(value.cpu(), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad.cpu(), expected_grad, rtol=1e-4, atol=1e-6)


def check_weighted_cross_entropy_matches_float64_oracle(device):
    weights = [1.0, 2.0, 0.5, 3.0]
    logits, target = make_batch(**MULTI_BLOCK)
    for normalize in ("weights", "pixels"):
        loss = build_loss({"name": "weighted_ce", "weights": weights, "normalize": normalize, "kernel": "triton"}, context())
        value, grad = value_and_grad(loss.to(device), *on(device, logits, target))
        expected, expected_grad = value_and_grad(lambda x, t: weighted_ce_oracle(x, t, weights, normalize), logits.double(), target)
        torch.testing.assert_close(value.cpu(), expected, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(grad.cpu(), expected_grad, rtol=1e-4, atol=1e-6)


def check_ema_statistics_follow_the_torch_path(device):
    fused, plain = recall(device, kernel="triton", statistics="ema", momentum=0.7), recall(device, statistics="ema", momentum=0.7)
    for seed in (1, 2, 3):
        logits, target = on(device, *make_batch(n=2, h=9, w=11, seed=seed))
        torch.testing.assert_close(fused(logits, target), plain(logits, target), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(fused.ema_counts, plain.ema_counts)
        torch.testing.assert_close(fused.extra_logs()["recall_weight"], plain.extra_logs()["recall_weight"])
        torch.testing.assert_close(fused.extra_logs()["batch_recall"], plain.extra_logs()["batch_recall"])


def check_counts_are_exact_for_many_classes(device):
    # 19 classes (Cityscapes): 32-wide class tiles of 128 pixels; 40 x 72 = 2880 pixels per image
    # make 23 tiles, summed by three forward programs of 8 tiles, the last one partly past the end.
    classes = 19
    generator = torch.Generator().manual_seed(7)
    logits = torch.randn(2, classes, 40, 72, generator=generator)
    target = torch.randint(0, classes, (2, 40, 72), generator=generator)
    target[:, :3] = IGNORE
    x = logits.to(device).requires_grad_(True)
    counts, nll_sums = class_ce_statistics(x, target.to(device), classes, IGNORE)
    valid = target != IGNORE
    labels = target[valid]
    miss = logits.gather(1, target.clamp_max(classes - 1).unsqueeze(1)).squeeze(1)[valid] < logits.amax(1)[valid]
    nll = F.cross_entropy(logits, target, ignore_index=IGNORE, reduction="none")[valid]
    assert counts[0].cpu().tolist() == torch.bincount(labels, minlength=classes).float().tolist()
    assert counts[1].cpu().tolist() == torch.bincount(labels[miss], minlength=classes).float().tolist()
    torch.testing.assert_close(nll_sums.detach().cpu(), torch.zeros(classes).index_add_(0, labels, nll), rtol=1e-5, atol=1e-5)
    soft = -torch.expm1(-nll.double())
    torch.testing.assert_close(counts[2].cpu().double(), torch.zeros(classes).double().index_add_(0, labels, soft), rtol=1e-5, atol=1e-6)
    # Counts are separate tensors: changing them in place (a DDP all-reduce, say) keeps backward working.
    counts.add_(1)
    nll_sums.sum().backward()
    assert torch.isfinite(x.grad).all()


def check_non_finite_logits_of_ignored_pixels_stay_out_of_the_counts(device):
    logits, target = make_batch(n=1, h=4, w=6, ignore_fraction=0.0)
    target[0, 0, 0] = IGNORE
    logits[0, :, 0, 0] = float("inf")
    counts, _ = class_ce_statistics(*on(device, logits, target), C, IGNORE)
    assert torch.isfinite(counts).all(), counts


def check_soft_misses_keep_precision_for_confident_pixels(device):
    # Target logit 16 above the rest: 1 - p(target) = 3 e^-16 / (1 + 3 e^-16), about 3.4e-7, far
    # below float32 rounding of p(target) itself, so computing 1 - p would give 0.
    logits = torch.zeros(1, C, 2, 2)
    logits[:, 1] = 16.0
    target = torch.ones(1, 2, 2, dtype=torch.long)
    counts, _ = class_ce_statistics(*on(device, logits, target), C, IGNORE)
    expected = 4 * 3 * math.exp(-16) / (1 + 3 * math.exp(-16))
    assert abs(counts[2, 1].item() - expected) < 1e-3 * expected, (counts[2, 1].item(), expected)


def check_channels_last_bf16_and_strided_logits(device):
    logits, target = on(device, *make_batch(**MULTI_BLOCK))
    plain_value, plain_grad = value_and_grad(recall(device), logits, target)
    channels_last = logits.contiguous(memory_format=torch.channels_last)
    value, grad = value_and_grad(recall(device, kernel="triton"), channels_last, target)
    torch.testing.assert_close(value, plain_value, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, plain_grad, rtol=1e-4, atol=1e-6)
    # Views: every second column (pixel stride 2) and single rows or columns are read in place;
    # a crop of a wider tensor, whose H and W do not flatten to one stride, is copied first.
    doubled = torch.stack([logits, logits], dim=4).flatten(3)[:, :, :, ::2]
    cropped = torch.cat([logits, logits], dim=3)[:, :, :, : logits.shape[3]]
    assert doubled.stride(3) == 2 and cropped.stride(2) != cropped.shape[3] * cropped.stride(3)
    views = [  # (view of the logits, matching crop of the target)
        (lambda x: torch.stack([x, x], dim=4).flatten(3)[:, :, :, ::2], lambda t: t),
        (lambda x: torch.cat([x, x], dim=3)[:, :, :, : x.shape[3]], lambda t: t),
        (lambda x: x[:, :, :, 5:6], lambda t: t[:, :, 5:6]),  # W == 1: the pixel stride is H's
        (lambda x: x[:, :, 7:8], lambda t: t[:, 7:8]),  # H == 1
    ]
    for make_view, crop in views:
        # The view is taken inside autograd (value_and_grad's clone would make it contiguous).
        results = []
        for kernel in ("triton", "torch"):
            base = logits.clone().requires_grad_(True)
            value = recall(device, kernel=kernel)(make_view(base), crop(target))
            value.backward()
            results.append((value.detach(), base.grad))
        torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(results[0][1], results[1][1], rtol=1e-4, atol=1e-6)
    # bf16 logits: float32 arithmetic inside, gradient back in bf16 and in the logits' layout.
    half = channels_last.to(torch.bfloat16).requires_grad_(True)
    value = recall(device, kernel="triton")(half, target)
    value.backward()
    expected = recall(device)(half.detach().float(), target)
    assert value.dtype == torch.float32 and half.grad.dtype == torch.bfloat16
    assert half.grad.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(value, expected, rtol=1e-5, atol=1e-6)
    plain_half = half.detach().clone().requires_grad_(True)
    recall(device)(plain_half, target).backward()
    torch.testing.assert_close(half.grad.float(), plain_half.grad.float(), rtol=2e-2, atol=1e-6)  # bf16 rounding


def check_ties_count_as_hits(device):
    logits = torch.tensor([[1.0, 3.0, 3.0, 0.0], [2.0, 2.0, 2.0, 2.0], [0.0, 1.0, 5.0, 5.0]]).T.reshape(1, C, 1, 3)
    target = torch.tensor([[[2, 3, 3]]])
    counts, _ = class_ce_statistics(*on(device, logits, target), C, IGNORE)
    assert counts[1].sum().item() == 0, "a target logit equal to the maximum is a hit"
    counts, _ = class_ce_statistics(*on(device, logits, torch.tensor([[[0, 0, 1]]])), C, IGNORE)
    assert counts[1].cpu().tolist() == [1.0, 1.0, 0.0, 0.0]


def check_all_ignored_gives_zero_loss_and_gradient(device):
    logits, target = make_batch(n=1, h=4, w=6)
    target.fill_(IGNORE)
    value, grad = value_and_grad(recall(device, kernel="triton"), *on(device, logits, target))
    assert value.item() == 0 and grad.abs().max().item() == 0


def check_out_of_range_label_makes_loss_and_gradient_nan(device):
    for bad_label in (C + 3, -7, 2**32 + 1):  # the last one would wrap into range if narrowed first
        logits, target = make_batch(n=1, h=4, w=6, ignore_fraction=0.0)
        target[0, 1, 2] = bad_label
        x = logits.to(device).requires_grad_(True)
        value = recall(device, kernel="triton")(x, target.to(device))
        value.backward()
        assert torch.isnan(value).item(), f"label {bad_label} outside [0, C) must not pass silently"
        assert torch.isnan(x.grad).any().item(), "the gradient must be non-finite too, or nonfinite=skip would apply the step"
        counts, _ = class_ce_statistics(x.detach(), target.to(device), C, IGNORE)
        assert counts[0].sum().item() == target.numel() - 1, "a bad label must not be counted in any class"


def check_trainer_skips_a_step_with_a_bad_label(device):
    """trainer.nonfinite=skip with the fused kernel: a mask value that is neither a class nor the
    ignore index makes the step non-finite, and no weight changes."""
    from hydra import compose, initialize_config_dir

    from conftest import CONFIG_DIR, TINY_OVERRIDES
    from recallseg.training.trainer import Trainer

    with tempfile.TemporaryDirectory() as tmp, initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[
            *TINY_OVERRIDES, f"output_dir={tmp}", f"paths.cache_dir={tmp}/cache", f"trainer.device={device}",
            "loss=recall", "loss.kernel=triton", "trainer.nonfinite=skip",
        ])
        trainer = Trainer(cfg)
        images = torch.randint(0, 256, (2, 64, 64, 3), dtype=torch.uint8)
        masks = torch.randint(0, 9, (2, 64, 64), dtype=torch.uint8)
        masks[0, 0, 0] = 20  # 9 classes, ignore index 255
        before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
        loss = trainer.step(images, masks)
        assert torch.isnan(loss).item() and trainer._found_inf.item() > 0
        for name, parameter in trainer.model.named_parameters():
            assert torch.equal(parameter.detach(), before[name]), f"{name} changed in a skipped step"


def check_results_are_bitwise_deterministic(device):
    logits, target = on(device, *make_batch(**MULTI_BLOCK))
    first = value_and_grad(recall(device, kernel="triton"), logits, target)
    second = value_and_grad(recall(device, kernel="triton"), logits, target)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


CHECKS = [value for name, value in sorted(globals().items()) if name.startswith("check_")]


if __name__ == "__main__":
    for check in CHECKS:
        check("cpu")
        print("passed", check.__name__)
    print(f"all {len(CHECKS)} checks passed")
    sys.exit(0)
