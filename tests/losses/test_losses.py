"""Specification of the losses: each one against an independent float64 oracle, plus the
identities of recall loss, the authors' defects that must not come back, and the registry.

Oracles here are written from the formulas (Python loops over pixels, float64), never by
calling the module under test. Gradients of the oracles come from torch.autograd in float64.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from recallseg.errors import ConfigError
from recallseg.losses import LOSSES, FocalLoss, LossContext, SegmentationLoss, build_loss, register_loss
from recallseg.losses.class_weights import class_weights_from_counts
from recallseg.losses.functional import class_totals_and_flagged, target_is_top1, target_is_top1_from_log_probs
from recallseg.losses.fused.statistics import triton_available

IGNORE = 255
C = 4
CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "loss"
# Pixel counts of an imaginary training split (class 3 never occurs there).
TRAIN_COUNTS = torch.tensor([5000.0, 800.0, 40.0, 0.0])


def context(num_classes: int = C) -> LossContext:
    return LossContext(num_classes=num_classes, ignore_index=IGNORE, class_pixel_counts=lambda: TRAIN_COUNTS[:num_classes])


def make(name: str, **options) -> SegmentationLoss:
    return build_loss({"name": name, **options}, context())


def make_batch(n: int = 2, h: int = 3, w: int = 5, ignore_fraction: float = 0.2, seed: int = 0, scale: float = 2.0):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, C, h, w, generator=generator) * scale
    target = torch.randint(0, C, (n, h, w), generator=generator)
    target[torch.rand(n, h, w, generator=generator) < ignore_fraction] = IGNORE
    return logits, target


# ---------------------------------------------------------------- oracles (float64, loops)


def pixels(logits: torch.Tensor, target: torch.Tensor):
    """(log-probabilities P x C in float64, labels, image index) of every pixel, ignored ones included."""
    x = logits.double().permute(0, 2, 3, 1).reshape(-1, logits.shape[1])
    shifted = x - x.max(dim=1, keepdim=True).values.detach()
    log_probs = shifted - torch.log(torch.exp(shifted).sum(dim=1, keepdim=True))
    labels = target.reshape(-1).tolist()
    images = [i // (target.shape[1] * target.shape[2]) for i in range(len(labels))]
    return log_probs, labels, images


def zero_of(logits):
    return logits.double().sum() * 0.0


def mean_or_zero(terms, logits):
    return sum(terms) / len(terms) if terms else zero_of(logits)


def ce_oracle(logits, target, label_smoothing=0.0):
    log_probs, labels, _ = pixels(logits, target)
    terms = []
    for i, y in enumerate(labels):
        if y == IGNORE:
            continue
        smooth = -log_probs[i].sum() / log_probs.shape[1]
        terms.append((1 - label_smoothing) * -log_probs[i, y] + label_smoothing * smooth)
    return mean_or_zero(terms, logits)


def weighted_ce_oracle(logits, target, weights, normalize="weights"):
    log_probs, labels, _ = pixels(logits, target)
    total, denominator = zero_of(logits), 0.0
    for i, y in enumerate(labels):
        if y == IGNORE:
            continue
        total = total + weights[y] * -log_probs[i, y]
        denominator += weights[y] if normalize == "weights" else 1.0
    return total / denominator if denominator > 0 else zero_of(logits)


def recall_counts(logits, target, soft=False):
    """[N_c, FN_c] lists; a hit is 'target logit >= every logit' (ties are hits)."""
    log_probs, labels, _ = pixels(logits.detach(), target)
    x = logits.detach().double().permute(0, 2, 3, 1).reshape(-1, logits.shape[1])
    totals, misses = [0.0] * C, [0.0] * C
    for i, y in enumerate(labels):
        if y == IGNORE:
            continue
        totals[y] += 1
        if soft:
            misses[y] += 1.0 - math.exp(log_probs[i, y].item())
        else:
            misses[y] += 0.0 if all(x[i, y] >= x[i, c] for c in range(C)) else 1.0
    return totals, misses


def false_positive_counts(logits, target, soft=False):
    """FP_c list: a missed pixel counts for its first largest logit's class; soft: every other
    class's pixel counts for c with its probability of c."""
    log_probs, labels, _ = pixels(logits.detach(), target)
    x = logits.detach().double().permute(0, 2, 3, 1).reshape(-1, logits.shape[1])
    false_positives = [0.0] * C
    for i, y in enumerate(labels):
        if y == IGNORE:
            continue
        if soft:
            for c in range(C):
                false_positives[c] += math.exp(log_probs[i, c].item()) if c != y else 0.0
        elif not all(x[i, y] >= x[i, c] for c in range(C)):
            false_positives[max(range(C), key=lambda c: (x[i, c].item(), -c))] += 1.0
    return false_positives


def recall_from_counts(logits, target, totals, misses, false_positives=None):
    """``false_positives`` given: the union denominator, ``FN_c / (N_c + FP_c)``."""
    extra = false_positives or [0.0] * C
    weights = [misses[c] / (totals[c] + extra[c]) if totals[c] > 0 else 0.0 for c in range(C)]
    log_probs, labels, _ = pixels(logits, target)
    terms = [weights[y] * -log_probs[i, y] for i, y in enumerate(labels) if y != IGNORE]
    return mean_or_zero(terms, logits)


def recall_oracle(logits, target, soft=False, union=False):
    false_positives = false_positive_counts(logits, target, soft) if union else None
    return recall_from_counts(logits, target, *recall_counts(logits, target, soft), false_positives)


def focal_oracle(logits, target, gamma, alpha=None):
    log_probs, labels, _ = pixels(logits, target)
    terms = []
    for i, y in enumerate(labels):
        if y == IGNORE:
            continue
        p = torch.exp(log_probs[i, y])
        weight = 1.0 if alpha is None else alpha[y]
        terms.append(weight * (1 - p) ** gamma * -log_probs[i, y])
    return mean_or_zero(terms, logits)


def lovasz_class_oracle(probs, labels, c):
    """Lovász extension of the Jaccard loss of class c, from its set-function definition:
    Delta(M) = |M| / |gt u M| for the set M of the i pixels with the largest errors."""
    foreground = [1.0 if y == c else 0.0 for y in labels]
    errors = [(foreground[i] - probs[i][c]).abs() for i in range(len(labels))]
    order = sorted(range(len(labels)), key=lambda i: -errors[i].item())
    gt_count = sum(foreground)
    loss, previous, non_gt = 0.0, 0.0, 0
    for k, i in enumerate(order, start=1):
        non_gt += foreground[i] == 0.0
        delta = k / (gt_count + non_gt)
        loss = loss + errors[i] * (delta - previous)
        previous = delta
    return loss, gt_count > 0


def region_groups(logits, target, per_image):
    """Probabilities, labels and the non-empty groups of non-ignored pixel indices a region loss averages over."""
    log_probs, labels, images = pixels(logits, target)
    keys = sorted(set(images)) if per_image else [None]
    groups = [[i for i, y in enumerate(labels) if y != IGNORE and (key is None or images[i] == key)] for key in keys]
    return torch.exp(log_probs), labels, [members for members in groups if members]


def lovasz_oracle(logits, target, classes="present", per_image=False):
    probs, labels, groups = region_groups(logits, target, per_image)
    group_losses = []
    for members in groups:
        chosen = []
        for c in range(C):
            loss, present = lovasz_class_oracle([probs[i] for i in members], [labels[i] for i in members], c)
            if classes == "all" or present:
                chosen.append(loss)
        group_losses.append(sum(chosen) / len(chosen))
    return mean_or_zero(group_losses, logits)


def soft_iou_oracle(logits, target, classes="present", per_image=False):
    """1 - mean over classes of sum(p * g) / sum(p + g - p * g), loops over the non-ignored pixels."""
    probs, labels, groups = region_groups(logits, target, per_image)
    group_losses = []
    for members in groups:
        ious = []
        for c in range(C):
            inter = sum(probs[i, c] * (labels[i] == c) for i in members)
            union = sum(probs[i, c] + (labels[i] == c) - probs[i, c] * (labels[i] == c) for i in members)
            if classes == "all" or any(labels[i] == c for i in members):
                ious.append(inter / union)
        group_losses.append(1.0 - sum(ious) / len(ious))
    return mean_or_zero(group_losses, logits)


def ohem_oracle(logits, target, thresh, min_kept):
    log_probs, labels, _ = pixels(logits, target)
    losses = {i: -log_probs[i, y] for i, y in enumerate(labels) if y != IGNORE}
    hardest = sorted((v.item() for v in losses.values()), reverse=True)
    kth = hardest[min_kept - 1] if 0 < min_kept <= len(hardest) else (-math.inf if min_kept > 0 else math.inf)
    kept = [v for v in losses.values() if v.item() > -math.log(thresh) or v.item() >= kth]
    return mean_or_zero(kept, logits)


def effective_number_weights(counts, beta):
    raw = [(1 - beta) / (1 - beta**n) if n > 0 else 0.0 for n in counts]
    present = [w for w, n in zip(raw, counts) if n > 0]
    mean = sum(present) / len(present)
    return [w / mean for w in raw]


CB_WEIGHTS = effective_number_weights(TRAIN_COUNTS.tolist(), 0.99)

# (id, config, oracle(logits, target)). Every loss of the registry appears at least once.
CASES = [
    ("ce", {"name": "ce"}, ce_oracle),
    ("ce_smooth", {"name": "ce", "label_smoothing": 0.1}, lambda x, t: ce_oracle(x, t, 0.1)),
    ("weighted_ce", {"name": "weighted_ce", "weights": [1.0, 2.0, 0.5, 3.0]}, lambda x, t: weighted_ce_oracle(x, t, [1.0, 2.0, 0.5, 3.0])),
    (
        "weighted_ce_pixels",
        {"name": "weighted_ce", "weights": [1.0, 2.0, 0.5, 3.0], "normalize": "pixels"},
        lambda x, t: weighted_ce_oracle(x, t, [1.0, 2.0, 0.5, 3.0], "pixels"),
    ),
    ("recall", {"name": "recall"}, recall_oracle),
    ("recall_soft", {"name": "recall", "soft": True}, lambda x, t: recall_oracle(x, t, soft=True)),
    ("recall_union", {"name": "recall", "denominator": "union"}, lambda x, t: recall_oracle(x, t, union=True)),
    ("recall_soft_union", {"name": "recall", "soft": True, "denominator": "union"}, lambda x, t: recall_oracle(x, t, True, True)),
    ("recall_ema_first_step", {"name": "recall", "statistics": "ema", "momentum": 0.7}, recall_oracle),
    ("recall_sync", {"name": "recall", "sync": True}, recall_oracle),
    ("focal", {"name": "focal", "gamma": 2.0}, lambda x, t: focal_oracle(x, t, 2.0)),
    (
        "focal_alpha",
        {"name": "focal", "gamma": 0.5, "alpha": [0.25, 1.0, 2.0, 0.5]},
        lambda x, t: focal_oracle(x, t, 0.5, [0.25, 1.0, 2.0, 0.5]),
    ),
    ("lovasz", {"name": "lovasz"}, lovasz_oracle),
    ("lovasz_all", {"name": "lovasz", "classes": "all"}, lambda x, t: lovasz_oracle(x, t, "all")),
    ("lovasz_per_image", {"name": "lovasz", "per_image": True}, lambda x, t: lovasz_oracle(x, t, per_image=True)),
    (
        "lovasz_all_per_image",
        {"name": "lovasz", "classes": "all", "per_image": True},
        lambda x, t: lovasz_oracle(x, t, "all", per_image=True),
    ),
    ("soft_iou", {"name": "soft_iou"}, soft_iou_oracle),
    ("soft_iou_all_per_image", {"name": "soft_iou", "classes": "all", "per_image": True}, lambda x, t: soft_iou_oracle(x, t, "all", True)),
    ("soft_iou_per_image", {"name": "soft_iou", "per_image": True}, lambda x, t: soft_iou_oracle(x, t, per_image=True)),
    ("ohem", {"name": "ohem", "thresh": 0.7, "min_kept": 5}, lambda x, t: ohem_oracle(x, t, 0.7, 5)),
    ("ohem_min_kept_rules", {"name": "ohem", "thresh": 0.05, "min_kept": 7}, lambda x, t: ohem_oracle(x, t, 0.05, 7)),
    ("ohem_thresh_only", {"name": "ohem", "thresh": 0.5, "min_kept": 0}, lambda x, t: ohem_oracle(x, t, 0.5, 0)),
    ("ohem_min_kept_above_pixels", {"name": "ohem", "thresh": 0.05, "min_kept": 1000}, lambda x, t: ohem_oracle(x, t, 0.05, 1000)),
    ("class_balanced", {"name": "class_balanced", "beta": 0.99}, lambda x, t: weighted_ce_oracle(x, t, CB_WEIGHTS)),
    (
        "combined",
        {"name": "combined", "terms": [{"name": "recall", "weight": 1.0}, {"name": "lovasz", "weight": 0.5}]},
        lambda x, t: recall_oracle(x, t) + 0.5 * lovasz_oracle(x, t),
    ),
    (
        "combined_nested",
        {
            "name": "combined",
            "terms": [
                {"name": "focal", "weight": 0.3, "gamma": 1.0},
                {"name": "combined", "weight": 2.0, "terms": [{"name": "class_balanced", "beta": 0.99}, {"name": "ce"}]},
            ],
        },
        lambda x, t: 0.3 * focal_oracle(x, t, 1.0) + 2.0 * (weighted_ce_oracle(x, t, CB_WEIGHTS) + ce_oracle(x, t)),
    ),
]
CASE_IDS = [case[0] for case in CASES]

BATCHES = {
    "with_ignore": dict(n=2, ignore_fraction=0.25, seed=1),
    "no_ignore": dict(n=2, ignore_fraction=0.0, seed=2),
    "batch_size_1": dict(n=1, h=4, w=6, ignore_fraction=0.2, seed=3),
}


def value_and_grad(loss_fn, logits, target):
    x = logits.clone().requires_grad_(True)
    value = loss_fn(x, target)
    value.backward()
    return value.detach().double(), x.grad.double()


# ---------------------------------------------------------------- every loss against its oracle


@pytest.mark.parametrize("batch", list(BATCHES), ids=list(BATCHES))
@pytest.mark.parametrize("case_id, cfg, oracle", CASES, ids=CASE_IDS)
def test_loss_and_gradient_match_float64_oracle(case_id, cfg, oracle, batch):
    logits, target = make_batch(**BATCHES[batch])
    value, grad = value_and_grad(build_loss(cfg, context()), logits, target)
    expected, expected_grad = value_and_grad(oracle, logits.double(), target)
    assert torch.isfinite(value)
    torch.testing.assert_close(value, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("case_id, cfg, oracle", CASES, ids=CASE_IDS)
def test_all_ignored_batch_gives_finite_loss_and_zero_gradient(case_id, cfg, oracle):
    logits, target = make_batch()
    target.fill_(IGNORE)
    value, grad = value_and_grad(build_loss(cfg, context()), logits, target)
    assert torch.isfinite(value)
    assert value == 0
    assert torch.count_nonzero(grad) == 0


@pytest.mark.parametrize("case_id, cfg, oracle", CASES, ids=CASE_IDS)
def test_ignored_pixels_take_no_part(case_id, cfg, oracle):
    """Label 255 does not crash, and whatever the logits of ignored pixels, the loss and the
    other pixels' gradients stay the same (the mean excludes them)."""
    logits, target = make_batch(ignore_fraction=0.3, seed=4)
    ignored = (target == IGNORE).unsqueeze(1).expand_as(logits)
    scrambled = torch.where(ignored, torch.randn_like(logits) * 50, logits)
    value, grad = value_and_grad(build_loss(cfg, context()), logits, target)
    value2, grad2 = value_and_grad(build_loss(cfg, context()), scrambled, target)
    torch.testing.assert_close(value, value2)
    torch.testing.assert_close(grad, grad2)
    assert torch.count_nonzero(grad[ignored]) == 0


@pytest.mark.parametrize("case_id, cfg, oracle", CASES, ids=CASE_IDS)
def test_a_negative_ignore_index_is_ignored_like_255(case_id, cfg, oracle):
    """ignore_index=-1 (datasets whose masks mark void as -1): those pixels take no part."""
    logits, target = make_batch(ignore_fraction=0.3, seed=6)
    negative = torch.where(target == IGNORE, -1, target)
    minus_one = LossContext(num_classes=C, ignore_index=-1, class_pixel_counts=lambda: TRAIN_COUNTS)
    value, grad = value_and_grad(build_loss(cfg, minus_one), logits, negative)
    expected, expected_grad = value_and_grad(oracle, logits.double(), target)  # the oracles ignore label 255
    torch.testing.assert_close(value, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("case_id, cfg, oracle", CASES, ids=CASE_IDS)
def test_a_batch_with_one_labelled_pixel_matches_the_oracle(case_id, cfg, oracle):
    """The means divide by one pixel, not by a floor above it."""
    logits, target = make_batch(seed=8)
    target.fill_(IGNORE)
    target[1, 2, 3] = 2
    value, grad = value_and_grad(build_loss(cfg, context()), logits, target)
    expected, expected_grad = value_and_grad(oracle, logits.double(), target)
    torch.testing.assert_close(value, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-4, atol=1e-6)


PER_IMAGE_CASES = [case for case in CASES if case[1].get("per_image")]


@pytest.mark.parametrize("case_id, cfg, oracle", PER_IMAGE_CASES, ids=[case[0] for case in PER_IMAGE_CASES])
def test_per_image_region_losses_average_over_the_images_that_have_a_labelled_pixel(case_id, cfg, oracle):
    logits, target = make_batch(n=3, seed=9)
    target[1] = IGNORE  # the middle image takes no part in the mean
    value, grad = value_and_grad(build_loss(cfg, context()), logits, target)
    expected, expected_grad = value_and_grad(oracle, logits.double(), target)
    torch.testing.assert_close(value, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-4, atol=1e-6)


def test_recall_logs_the_batch_recall_and_the_weights_it_used():
    logits, target = make_batch(seed=5)
    target[target == 3] = 1  # class 3 absent: recall 1 (no pixel missed), weight 0
    loss = make("recall")
    loss(logits, target)
    totals, misses = recall_counts(logits, target)
    logs = loss.extra_logs()
    recall = [1.0 - m / t if t else 1.0 for t, m in zip(totals, misses)]
    weights = [m / t if t else 0.0 for t, m in zip(totals, misses)]
    torch.testing.assert_close(logs["batch_recall"].double(), torch.tensor(recall, dtype=torch.float64))
    torch.testing.assert_close(logs["recall_weight"].double(), torch.tensor(weights, dtype=torch.float64))


@pytest.mark.parametrize("case_id, cfg, oracle", CASES, ids=CASE_IDS)
def test_absent_class_gives_no_nan_or_inf(case_id, cfg, oracle):
    logits, target = make_batch(seed=5)
    target[target == 3] = 1  # class 3 is absent from the batch (and from TRAIN_COUNTS)
    value, grad = value_and_grad(build_loss(cfg, context()), logits, target)
    assert torch.isfinite(value) and torch.isfinite(grad).all()


def test_lovasz_matches_segmentation_models_pytorch():
    """A second, external oracle for the default options (present classes, whole batch)."""
    from segmentation_models_pytorch.losses import LovaszLoss as SmpLovasz

    logits, target = make_batch(n=2, h=6, w=7, seed=6)
    for per_image in (False, True):
        ours = make("lovasz", per_image=per_image)(logits, target)
        theirs = SmpLovasz("multiclass", per_image=per_image, ignore_index=IGNORE)(logits, target)
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


def test_ohem_ranks_hardest_pixels_over_the_whole_batch():
    """min_kept picks the hardest pixels of the batch, wherever they are (not per row or image)."""
    logits = torch.full((2, C, 1, 3), 0.0)
    logits[:, 0] = 10.0  # class 0 predicted everywhere with p ~ 1
    target = torch.zeros(2, 1, 3, dtype=torch.long)
    target[1, 0, 2] = 2  # the one hard pixel, in the second image
    target[0, 0, 1] = 1  # a second hard pixel, in the first image
    loss = make("ohem", thresh=1e-9, min_kept=2)(logits, target)
    expected = F.cross_entropy(logits, target, reduction="none")[[1, 0], 0, [2, 1]].mean()
    torch.testing.assert_close(loss, expected)


def test_focal_factor_is_per_pixel_not_on_the_batch_mean():
    """The authors' focal loss scaled the batch-mean CE by (1 - exp(-mean CE)) ** gamma."""
    logits = torch.tensor([[4.0, 0.0], [0.0, 4.0]]).T.reshape(1, 2, 1, 2)  # pixel 0 easy, pixel 1 hard
    target = torch.tensor([[[0, 0]]])
    ce = F.cross_entropy(logits, target, reduction="none").flatten()
    per_pixel = ((1 - torch.exp(-ce)) ** 2 * ce).mean()
    on_batch_mean = (1 - torch.exp(-ce.mean())) ** 2 * ce.mean()
    loss = FocalLoss(num_classes=2, gamma=2.0)(logits, target)
    torch.testing.assert_close(loss, per_pixel)
    assert not torch.isclose(loss, on_batch_mean)


def test_focal_with_gamma_below_one_keeps_a_finite_gradient_where_the_target_probability_is_one():
    """(1 - p_t) ** gamma has an infinite derivative at p_t == 1 for gamma < 1; the floor on
    1 - p_t keeps it finite, for a labelled pixel and for an ignored one (whose NaN the mask would keep)."""
    logits = torch.zeros(1, C, 1, 3)
    logits[0, 0] = 200.0  # p(class 0) == 1 in float32 everywhere
    logits[0, 1, 0, 2] = 1.0
    target = torch.tensor([[[0, IGNORE, 1]]])
    value, grad = value_and_grad(make("focal", gamma=0.5), logits, target)
    assert torch.isfinite(value) and torch.isfinite(grad).all()
    assert grad[0, :, 0, :2].abs().max() < 1e-12  # confident and ignored pixels: no gradient


def test_focal_with_gamma_zero_is_cross_entropy():
    logits, target = make_batch(seed=7)
    torch.testing.assert_close(make("focal", gamma=0.0)(logits, target), make("ce")(logits, target))


# ---------------------------------------------------------------- recall loss identities


def test_recall_with_every_prediction_wrong_equals_cross_entropy():
    logits, target = make_batch(ignore_fraction=0.2, seed=8)
    valid = target != IGNORE
    safe = torch.where(valid, target, 0)
    # Push every target logit strictly below another class's logit.
    onehot = F.one_hot(safe, C).permute(0, 3, 1, 2).bool()
    logits = torch.where(onehot, logits.amin(dim=1, keepdim=True) - 1.0, logits)
    loss = make("recall")
    torch.testing.assert_close(loss(logits, target), make("ce")(logits, target))
    assert torch.equal(loss.extra_logs()["recall_weight"], torch.ones(C))


def test_recall_with_equal_false_negatives_is_inverse_frequency_weighted_ce_times_constant():
    """With FN_c = F for every class, w_c = F / N_c, and

        recall = 1/N sum_n F/N_{y_n} CE_n
        inverse-frequency weighted CE (PyTorch's weighted mean) = sum_n CE_n/N_{y_n} / sum_n 1/N_{y_n}
                                                              = sum_n CE_n/N_{y_n} / K

    with K the number of classes present, so recall = (F * K / N) * weighted CE."""
    # 1 image, 1 row: class c has N_c = 2, 3, 5, 6 pixels; exactly F = 2 misses in each class.
    counts, misses = [2, 3, 5, 6], 2
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    target = torch.cat([labels, torch.tensor([IGNORE, IGNORE])]).view(1, 1, -1)
    generator = torch.Generator().manual_seed(9)
    logits = torch.randn(1, C, 1, target.shape[-1], generator=generator)
    for c, n in enumerate(counts):
        positions = (target[0, 0] == c).nonzero().flatten()
        for k, p in enumerate(positions.tolist()):
            wrong_class = (c + 1) % C
            logits[0, c, 0, p] = 5.0 if k >= misses else -5.0
            logits[0, wrong_class, 0, p] = 0.0 if k >= misses else 5.0
    recall = make("recall")
    value = recall(logits, target)
    assert torch.allclose(recall.extra_logs()["recall_weight"], misses / torch.tensor(counts, dtype=torch.float32))
    inverse = class_weights_from_counts(counts, mode="inverse")
    weighted = make("weighted_ce", weights=inverse.tolist())(logits, target)
    n_pixels, n_classes = sum(counts), len(counts)
    factor = misses * n_classes / n_pixels
    torch.testing.assert_close(value, factor * weighted)


def test_recall_weights_carry_no_gradient():
    logits, target = make_batch(seed=10)
    for soft in (False, True):
        loss = make("recall", soft=soft)
        x = logits.clone().requires_grad_(True)
        loss(x, target).backward()
        assert not loss.extra_logs()["recall_weight"].requires_grad
        # The gradient is that of sum_n w[y_n] CE_n / N with w held constant.
        totals, misses = recall_counts(logits, target, soft=soft)
        weights = torch.tensor([m / t if t else 0.0 for t, m in zip(totals, misses)], dtype=torch.float64)
        x64 = logits.double().requires_grad_(True)
        valid = target != IGNORE
        nll = F.cross_entropy(x64, target, ignore_index=IGNORE, reduction="none")
        (weights[torch.where(valid, target, 0)] * nll).sum().div(valid.sum()).backward()
        torch.testing.assert_close(x.grad.double(), x64.grad, rtol=1e-4, atol=1e-7)


def test_class_without_misses_gets_weight_zero_and_absent_class_weight_zero():
    """The authors' counters start at 1, which gives a perfect class weight 1/N_c instead of 0."""
    logits, target = make_batch(ignore_fraction=0.1, seed=11)
    target[target == 3] = 2  # class 3 absent
    class0 = (target == 0).unsqueeze(1)
    boost = torch.zeros_like(logits)
    boost[:, 0] = 100.0
    logits = torch.where(class0, logits + boost, logits)  # every class-0 pixel is a hit
    loss = make("recall")
    loss(logits, target)
    weights = loss.extra_logs()["recall_weight"]
    assert weights[0] == 0 and weights[3] == 0
    assert torch.isfinite(weights).all()
    assert loss.extra_logs()["batch_recall"][0] == 1


def test_ties_between_target_and_another_class_count_as_hits():
    """The documented tie rule: a pixel is a hit when its target logit equals the maximum,
    even where argmax's first-index rule would pick another class."""
    logits = torch.tensor([[1.0, 3.0, 3.0, 0.0], [2.0, 2.0, 2.0, 2.0], [0.0, 1.0, 5.0, 5.0]]).T.reshape(1, C, 1, 3)
    target = torch.tensor([[[2, 3, 3]]])
    assert target_is_top1(logits, target).tolist() == [[[True, True, True]]]
    assert logits.argmax(dim=1).ne(target).all()  # argmax would call all three misses
    assert target_is_top1(logits, torch.tensor([[[0, 0, 1]]])).tolist() == [[[False, True, False]]]
    loss = make("recall")
    loss(logits, target)
    weights = loss.extra_logs()["recall_weight"]
    assert weights[2] == 0 and weights[3] == 0


def test_hit_test_on_log_probabilities_keeps_ties_of_bf16_logits():
    """Recall loss tests hits on log_softmax output (-nll >= max log-prob); with bf16 logits,
    where ties are common, it must agree with the rule on the logits."""
    generator = torch.Generator().manual_seed(18)
    logits = (10.0 + 0.2 * torch.randn(2, C, 8, 8, generator=generator)).to(torch.bfloat16).float()  # steps of 1/16
    target = torch.randint(0, C, (2, 8, 8), generator=generator)
    log_probs = F.log_softmax(logits, dim=1)
    nll = F.nll_loss(log_probs, target, reduction="none")
    by_logits = target_is_top1(logits, target)
    assert (by_logits & logits.argmax(dim=1).ne(target)).any(), "the batch should contain ties"
    assert torch.equal(target_is_top1_from_log_probs(log_probs, nll), by_logits)


def test_class_totals_and_flagged_count_in_one_pass():
    labels = torch.tensor([0, 0, 1, 2, 2, 2, C, C])  # C marks ignored pixels
    miss = torch.tensor([True, False, True, False, True, True, True, False])
    totals, misses = class_totals_and_flagged(labels, miss, C)
    assert totals.tolist() == [2, 1, 3, 0] and misses.tolist() == [1, 1, 2, 0]


def test_ema_state_is_in_state_dict_and_updates_as_momentum_blend():
    momentum = 0.6
    loss = make("recall", statistics="ema", momentum=momentum)
    assert {"ema_counts", "seen"} <= set(loss.state_dict())
    batches = [make_batch(seed=s, ignore_fraction=0.2) for s in (20, 21, 22)]
    state = None
    for logits, target in batches:
        batch = torch.tensor(recall_counts(logits, target), dtype=torch.float64)
        state = batch if state is None else momentum * state + (1 - momentum) * batch
        value = loss(logits, target)
        torch.testing.assert_close(loss.state_dict()["ema_counts"].double(), state, rtol=1e-6, atol=1e-6)
        expected = recall_from_counts(logits.double(), target, state[0].tolist(), state[1].tolist())
        torch.testing.assert_close(value.double(), expected, rtol=1e-5, atol=1e-6)
    # A fresh loss restored from the state dict continues from the same statistics; eval does not update.
    restored = make("recall", statistics="ema", momentum=momentum)
    restored.load_state_dict(loss.state_dict())
    restored.eval()
    logits, target = make_batch(seed=23)
    value = restored(logits, target)
    torch.testing.assert_close(restored.ema_counts.double(), state, rtol=1e-6, atol=1e-6)
    expected = recall_from_counts(logits.double(), target, state[0].tolist(), state[1].tolist())
    torch.testing.assert_close(value.double(), expected, rtol=1e-5, atol=1e-6)


def test_the_union_denominator_never_takes_the_fused_path_which_counts_no_false_positives(monkeypatch):
    import recallseg.losses.recall as recall_module

    def fused(*args, **kwargs):
        raise AssertionError("the fused kernel took a union loss")

    monkeypatch.setattr(recall_module, "use_fused_kernel", lambda kernel, logits: True)  # as on CUDA with kernel=auto
    monkeypatch.setattr(recall_module, "class_ce_statistics", fused)
    logits, target = make_batch(**BATCHES["with_ignore"])
    value = build_loss({"name": "recall", "denominator": "union", "kernel": "auto"}, context())(logits, target)
    torch.testing.assert_close(value.double(), recall_oracle(logits.double(), target, union=True), rtol=1e-5, atol=1e-6)


def test_recall_ema_state_of_the_other_denominator_loads():
    """A run resumed with another ``denominator``: its [N_c, FN_c] carry over; a class checkpoint
    stores no FP_c, so a union loss starts its statistics again from the next batch."""
    union = make("recall", statistics="ema", momentum=0.5, denominator="union")
    union(*make_batch(seed=26))
    counts = union.ema_counts.clone()
    plain = make("recall", statistics="ema", momentum=0.5)
    plain.load_state_dict(union.state_dict())
    assert torch.equal(plain.ema_counts, counts[:2]) and bool(plain.seen)
    union = make("recall", statistics="ema", momentum=0.5, denominator="union")
    union.load_state_dict(plain.state_dict())
    assert union.ema_counts.shape == (3, C) and not bool(union.seen)
    logits, target = make_batch(seed=27)
    torch.testing.assert_close(union(logits, target).double(), recall_oracle(logits.double(), target, union=True), rtol=1e-5, atol=1e-6)


def test_sync_without_process_group_is_a_no_op():
    logits, target = make_batch(seed=12)
    plain, plain_grad = value_and_grad(make("recall"), logits, target)
    synced, synced_grad = value_and_grad(make("recall", sync=True), logits, target)
    assert torch.equal(plain, synced) and torch.equal(plain_grad, synced_grad)


@pytest.mark.parametrize("sync", [False, True])
def test_recall_all_reduces_its_counts_over_ranks_only_with_sync(monkeypatch, sync):
    """With an initialised process group (simulated), sync=true sums [N_c, FN_c] over the ranks
    with one all_reduce; sync=false keeps this rank's counts and calls no collective."""
    import torch.distributed as dist

    reduced = []
    monkeypatch.setattr(dist, "is_available", lambda: True)
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "all_reduce", lambda tensor, *args, **kwargs: reduced.append(tensor.clone()))
    logits, target = make_batch(seed=13)
    make("recall", sync=sync)(logits, target)
    if sync:
        assert len(reduced) == 1 and reduced[0].tolist() == [list(counts) for counts in recall_counts(logits, target)]
    else:
        assert reduced == []


@pytest.mark.parametrize("momentum", [1.0, 1.5, -0.1])
def test_recall_ema_momentum_outside_zero_inclusive_to_one_exclusive_is_refused(momentum):
    """momentum 1 would freeze the statistics at the first batch (s <- 1 * s + 0 * batch)."""
    from recallseg.losses.recall import RecallLoss

    message = f"loss.momentum: got {momentum}; it must be a number in [0, 1); set e.g. loss.momentum=0.5"
    with pytest.raises(ConfigError) as built_in_python:
        RecallLoss(C, statistics="ema", momentum=momentum)
    with pytest.raises(ConfigError) as built_from_config:
        make("recall", statistics="ema", momentum=momentum)
    assert str(built_in_python.value) == str(built_from_config.value) == message


def test_recall_ema_momentum_zero_is_accepted_and_keeps_only_the_last_batch():
    loss = make("recall", statistics="ema", momentum=0.0)
    for seed in (24, 25):
        logits, target = make_batch(seed=seed)
        loss(logits, target)
    assert loss.ema_counts.tolist() == [list(counts) for counts in recall_counts(logits, target)]
    assert make("recall", statistics="ema", momentum=0.999).momentum == 0.999


def _recall_sync_worker(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        logits, target = make_batch(n=2, h=5, w=7, seed=40 + rank)
        value, grad = value_and_grad(make("recall", sync=True), logits, target)
        torch.save({"value": value, "grad": grad}, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_sync_weights_come_from_the_counts_of_every_rank(tmp_path):
    """Two gloo processes: each rank's weights are FN_c / N_c over both ranks' pixels, while the
    mean runs over the rank's own pixels (DDP then averages the gradients)."""
    import torch.multiprocessing as mp

    mp.spawn(_recall_sync_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    batches = [make_batch(n=2, h=5, w=7, seed=40 + rank) for rank in range(2)]
    per_rank = [recall_counts(*batch) for batch in batches]
    totals = [a + b for a, b in zip(per_rank[0][0], per_rank[1][0])]
    misses = [a + b for a, b in zip(per_rank[0][1], per_rank[1][1])]
    for rank, (logits, target) in enumerate(batches):
        result = torch.load(tmp_path / f"rank{rank}.pt")
        expected, expected_grad = value_and_grad(lambda x, t: recall_from_counts(x, t, totals, misses), logits.double(), target)
        local = recall_oracle(logits.double(), target)
        assert not torch.isclose(expected, local), "the two ranks' batches should give different weights"
        torch.testing.assert_close(result["value"], expected, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(result["grad"], expected_grad, rtol=1e-4, atol=1e-6)


def test_auto_kernel_keeps_the_torch_path_beyond_the_fused_class_limit():
    from types import SimpleNamespace

    from recallseg.losses.fused.statistics import MAX_CLASSES, use_fused_kernel

    def cuda_logits(classes):  # what use_fused_kernel looks at, without a GPU
        return SimpleNamespace(is_cuda=True, dim=lambda: 4, shape=(1, classes, 8, 8))

    assert not use_fused_kernel("auto", cuda_logits(MAX_CLASSES + 1))
    assert use_fused_kernel("auto", cuda_logits(19)) == triton_available()


def test_soft_recall_uses_target_probabilities():
    logits, target = make_batch(seed=13)
    loss = make("recall", soft=True)
    loss(logits, target)
    totals, misses = recall_counts(logits, target, soft=True)
    expected = torch.tensor([m / t if t else 0.0 for t, m in zip(totals, misses)], dtype=torch.float32)
    torch.testing.assert_close(loss.extra_logs()["recall_weight"], expected)


# ---------------------------------------------------------------- combined, configs, registry


def test_combined_merges_terms_logs_with_prefixes_and_keeps_term_state():
    loss = make(
        "combined",
        terms=[{"name": "recall", "weight": 1.0, "statistics": "ema"}, {"name": "lovasz", "weight": 0.5}, {"name": "recall"}],
    )
    logits, target = make_batch(seed=14)
    loss(logits, target)
    assert set(loss.extra_logs()) == {
        "recall0/recall_weight",
        "recall0/batch_recall",
        "recall2/recall_weight",
        "recall2/batch_recall",
    }
    assert "terms.0.ema_counts" in loss.state_dict()


def test_build_loss_rejects_unknown_names_naming_the_nearest():
    with pytest.raises(ConfigError, match="no loss named 'recal'.*did you mean 'recall'"):
        make("recal")
    with pytest.raises(ConfigError, match="no loss named 'nope'"):
        make("combined", terms=[{"name": "nope"}])


@pytest.mark.parametrize("name", ["ce", "recall", "focal", "lovasz", "ohem", "class_balanced", "combined"])
def test_build_loss_rejects_unknown_options_naming_them(name):
    options = {"terms": [{"name": "ce"}]} if name == "combined" else {}
    with pytest.raises(ConfigError, match="gama") as info:
        make(name, gama=2.0, **options)
    assert info.value.key == "loss.gama" and info.value.problem.endswith("takes no option 'gama'")


def test_build_loss_rejects_unknown_weighted_ce_option():
    with pytest.raises(ConfigError, match="gama") as info:
        make("weighted_ce", weights=[1.0] * C, gama=2.0)
    assert info.value.key == "loss.gama" and info.value.problem.endswith("takes no option 'gama'")


@pytest.mark.parametrize(
    "cfg, message",
    [
        ({"name": "recall", "statistics": "running"}, "loss.statistics: got 'running'; it must be one of batch, ema; set loss.statistics=batch"),
        ({"name": "recall", "kernel": "cuda"}, "loss.kernel: got 'cuda'; it must be one of torch, triton, auto; set loss.kernel=torch"),
        ({"name": "recall", "soft": "yes"}, "loss.soft: got 'yes'; it must be true/false; set e.g. loss.soft=true"),
        ({"name": "ce", "kernel": "fast"}, "loss.kernel: got 'fast'; it must be one of torch, triton, auto; did you mean loss.kernel=auto?"),
        (
            {"name": "ce", "kernel": "triton", "label_smoothing": 0.1},
            "loss.label_smoothing: got 0.1, but loss.kernel=triton does not implement label smoothing; "
            "set loss.label_smoothing=0, or loss.kernel=torch or auto",
        ),
        (
            {"name": "recall", "kernel": "triton", "denominator": "union"},
            "loss.denominator: got union, but loss.kernel=triton counts no false positives; "
            "set loss.denominator=class, or loss.kernel=torch or auto",
        ),
        ({"name": "recall", "denominator": "iou"}, "loss.denominator: got 'iou'; it must be one of class, union; did you mean loss.denominator=union?"),
        ({"name": "ce", "label_smoothing": 1.5}, "loss.label_smoothing: got 1.5; it must be a number in [0, 1]; set e.g. loss.label_smoothing=1"),
        ({"name": "focal", "gamma": -1.0}, "loss.gamma: got -1.0; it must be a number >= 0; set e.g. loss.gamma=1"),
        ({"name": "focal", "alpha": [1.0, 2.0]}, "loss.alpha: got 2 values [1.0, 2.0]; it must be a list of 4 floats >= 0, or null; give 4 values"),
        ({"name": "focal", "alpha": [1.0, -2.0, 1.0, 1.0]}, "loss.alpha[1]: got -2.0; it must be a list of 4 floats >= 0, or null; fix that entry"),
        ({"name": "lovasz", "classes": "some"}, "loss.classes: got 'some'; it must be one of present, all; set loss.classes=present"),
        ({"name": "soft_iou", "per_image": None}, "loss.per_image: is null; it must be true/false; set loss.per_image=<value>"),
        ({"name": "ohem", "thresh": 0.0}, "loss.thresh: got 0.0; it must be a number in (0, 1]; set e.g. loss.thresh=1"),
        ({"name": "ohem", "min_kept": -1}, "loss.min_kept: got -1; it must be a number >= 0; set e.g. loss.min_kept=1"),
        ({"name": "ohem", "min_kept": 2.5}, "loss.min_kept: got 2.5; it must be a whole number; set e.g. loss.min_kept=2"),
        ({"name": "combined", "terms": []}, "loss.terms: is empty; it must be a list of sections; give at least one value"),
        (
            {"name": "combined", "terms": [{"weight": 1.0}]},
            "loss.terms: entry 0, {'weight': 1.0}, names no loss; give each term name: <loss> and optionally weight: <number>",
        ),
        (
            {"name": "combined", "terms": [{"name": "ce", "weight": "half"}]},
            "loss.terms: entry 0 has weight 'half', not a number; give each term a number as weight (1.0 by default)",
        ),
        (
            {"_target_": "recallseg.losses.combined.CombinedLoss"},
            "loss.terms: is missing; recallseg.losses.combined.CombinedLoss has no default for it; add loss.terms=<value>",
        ),
        ({"name": "class_balanced", "beta": 1.0}, "loss.beta: got 1.0; it must be a number in [0, 1), or auto; set e.g. loss.beta=auto"),
        ({"name": "class_balanced", "beta": "aut"}, "loss.beta: got 'aut'; it must be a number in [0, 1), or auto; set e.g. loss.beta=auto"),
        (
            {"name": "weighted_ce", "mode": "median_freq"},
            "loss.mode: got 'median_freq'; it must be one of inverse, median_count, median_frequency, effective_number, median; "
            "did you mean loss.mode=median_frequency?",
        ),
        ({"name": "weighted_ce", "weights": [1.0, 2.0]}, "loss.weights: got 2 values [1.0, 2.0]; it must be a list of 4 floats >= 0, or null; give 4 values"),
        ({"name": "weighted_ce", "normalize": "mean"}, "loss.normalize: got 'mean'; it must be one of weights, pixels; set loss.normalize=weights"),
        (
            {"name": "combined", "terms": [{"name": "recall", "momentum": 1.0}]},
            "loss.terms[0].momentum: got 1.0; it must be a number in [0, 1); set e.g. loss.terms[0].momentum=0.5",
        ),
    ],
)
def test_invalid_option_values_are_explained(cfg, message):
    with pytest.raises(ConfigError) as info:
        build_loss(cfg, context())
    assert str(info.value) == message


@pytest.mark.parametrize("momentum", [1, 1.0, 1.5, -0.1, math.inf])
def test_recall_momentum_outside_zero_to_one_is_refused(momentum):
    """At 1 the EMA would keep the first batch's counts for ever; the range is [0, 1)."""
    with pytest.raises(ConfigError) as info:
        make("recall", statistics="ema", momentum=momentum)
    assert info.value.key == "loss.momentum" and info.value.problem.endswith("it must be a number in [0, 1)")


@pytest.mark.parametrize("momentum", [0, 0.0, 0.5, 0.999])
def test_recall_momentum_inside_zero_to_one_is_taken(momentum):
    assert make("recall", statistics="ema", momentum=momentum).momentum == momentum


def test_the_triton_kernel_without_triton_is_refused_when_built(monkeypatch):
    import recallseg.losses.fused.statistics as statistics

    monkeypatch.setattr(statistics, "triton_available", lambda: False)
    for name in ("ce", "weighted_ce", "class_balanced", "recall"):
        options = {"weights": [1.0] * C} if name == "weighted_ce" else {}
        with pytest.raises(ConfigError) as info:
            make(name, kernel="triton", **options)
        assert str(info.value) == "loss.kernel: triton needs the triton package, which is not installed; pip install triton, or set loss.kernel=torch"


@pytest.mark.parametrize("text, message", [
    ("1.0 2.0", "loss.weights_file: got 2 values [1.0, 2.0]; it must be a list of 4 floats >= 0; give 4 values"),
    ("1 -1 1 1", "loss.weights_file[1]: got -1.0; it must be a list of 4 floats >= 0; fix that entry"),
])
def test_a_weights_file_is_held_to_what_loss_weights_may_be(tmp_path, text, message):
    path = tmp_path / "weights.txt"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        make("weighted_ce", weights_file=str(path))
    assert str(info.value) == message


def test_valid_values_of_every_kind_build():
    """Integers where numbers go, a count written as a float, the old mode name, beta as a number."""
    assert make("ohem", thresh=1, min_kept=1e5).min_kept == 100000
    assert make("focal", gamma=0, alpha=[1, 0, 2, 1]).alpha.tolist() == [1.0, 0.0, 2.0, 1.0]
    assert make("weighted_ce", mode="median").weights.shape == (C,)
    assert make("class_balanced", beta=0).weights.shape == (C,)
    assert make("ce", kernel="auto", label_smoothing=0.1).label_smoothing == 0.1


def test_class_balanced_needs_training_statistics():
    with pytest.raises(ValueError, match="training split"):
        build_loss({"name": "class_balanced"}, LossContext(num_classes=C))


def test_user_registered_loss_works_through_build_loss():
    @register_loss("test_scaled_ce")
    class ScaledCrossEntropy(SegmentationLoss):
        def __init__(self, num_classes, ignore_index=255, scale=1.0):
            super().__init__(num_classes, ignore_index)
            self.scale = scale

        def forward(self, logits, target):
            return self.scale * F.cross_entropy(logits, target, ignore_index=self.ignore_index)

    try:
        logits, target = make_batch(seed=16)
        loss = build_loss({"name": "test_scaled_ce", "scale": 3.0}, context())
        torch.testing.assert_close(loss(logits, target), 3.0 * make("ce")(logits, target))
        combined = make("combined", terms=[{"name": "test_scaled_ce", "weight": 0.5, "scale": 2.0}])
        torch.testing.assert_close(combined(logits, target), make("ce")(logits, target))
        with pytest.raises(ValueError, match="already exists"):
            register_loss("test_scaled_ce")(type("Other", (SegmentationLoss,), {}))
    finally:
        LOSSES.pop("test_scaled_ce", None)


# ---------------------------------------------------------------- the fused Triton kernel (loss.kernel)


@pytest.mark.slow
@pytest.mark.skipif(not triton_available(), reason="needs triton")
def test_fused_kernel_matches_oracles_under_the_triton_interpreter():
    """``tests/fused_kernel_cases.py`` on CPU tensors, in a process of its own with TRITON_INTERPRET=1."""
    tests_dir = Path(__file__).resolve().parents[1]
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": os.pathsep.join([str(tests_dir.parent), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, str(tests_dir / "fused_kernel_cases.py")], cwd=tests_dir, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "all 13 checks passed" in result.stdout, result.stdout


def compile_for_hopper(kernel, num_classes: int, unit_strides: tuple[str, ...]) -> str:
    """PTX of ``kernel`` for an H100 (sm_90), specialised as a launch at 384x768 would be:
    bf16 logits, strides equal to 1 as constants, pointers and other sizes divisible by 16."""
    import inspect

    from triton import compile as triton_compile
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from recallseg.losses.fused.statistics import _launch_geometry

    _, block_p, block_c = _launch_geometry(torch.empty(1, num_classes, 384, 768, device="meta"))
    constants = {"BLOCK_P": block_p, "BLOCK_C": block_c, "NUM_CLASSES": num_classes, "TILES": 8, **{name: 1 for name in unit_strides}}
    names = list(inspect.signature(kernel.fn).parameters)
    pointer_types = {"target_ptr": "*i64", "partial_ptr": "*fp32", "grad_sums_ptr": "*fp32"}
    signature = {
        name: "constexpr" if name in constants else pointer_types.get(name, "*bf16") if name.endswith("_ptr") else "i32"
        for name in names
    }
    aligned = {(i,): [["tt.divisibility", 16]] for i, name in enumerate(names) if name not in constants and name != "ignore_index"}
    source = ASTSource(fn=kernel, signature=signature, constexprs={k: v for k, v in constants.items() if k in names}, attrs=aligned)
    return triton_compile(source, target=GPUTarget("cuda", 90, 32)).asm["ptx"]


@pytest.mark.skipif(not triton_available(), reason="needs triton")
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_fused_kernels_compile_for_an_h100_with_vectorised_loads(layout):
    """Without a GPU: both kernels compile to sm_90 code, and at 16 classes the logits are read
    (and the gradient written) 16 bytes at a time in either layout, not element by element."""
    import re

    from recallseg.losses.fused.triton_kernels import backward_kernel, forward_kernel

    unit = ("stride_hw", "grad_stride_hw") if layout == "contiguous" else ("stride_c", "grad_stride_c")
    forward = compile_for_hopper(forward_kernel, 16, unit)
    backward = compile_for_hopper(backward_kernel, 16, unit)
    assert re.search(r"ld\.global(\.\w+)*\.v4\.b32", forward) and not re.search(r"ld\.global(\.\w+)*\.b16", forward)
    assert re.search(r"st\.global(\.\w+)*\.v4\.b32", backward) and not re.search(r"st\.global(\.\w+)*\.b16", backward)
    compile_for_hopper(forward_kernel, 19, unit)  # a class count that is not a power of two compiles too
    compile_for_hopper(backward_kernel, 19, unit)


def test_triton_kernel_on_cpu_tensors_is_refused_with_the_fix(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    logits, target = make_batch()
    if not triton_available():
        with pytest.raises(ValueError, match="pip install triton"):
            make("recall", kernel="triton")
        return
    with pytest.raises(ValueError, match="CUDA tensors only.*loss.kernel=torch"):
        make("recall", kernel="triton")(logits, target)


def test_auto_kernel_on_cpu_is_the_torch_path():
    logits, target = make_batch(seed=4)
    value, grad = value_and_grad(make("recall", kernel="auto"), logits, target)
    expected, expected_grad = value_and_grad(make("recall", kernel="torch"), logits, target)
    assert torch.equal(value, expected) and torch.equal(grad, expected_grad)


# ---------------------------------------------------------------- no host-device sync on CUDA


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("case_id, cfg, oracle", CASES, ids=CASE_IDS)
def test_loss_runs_without_host_device_sync_on_cuda(case_id, cfg, oracle):
    logits, target = make_batch(n=2, h=16, w=16, seed=17)
    logits, target = logits.cuda().requires_grad_(True), target.cuda()
    build_loss(cfg, context()).cuda()(logits, target).backward()  # warm-up: lazy initialisation may sync once
    torch.cuda.synchronize()
    loss = build_loss(cfg, context()).cuda()
    torch.cuda.set_sync_debug_mode("error")
    try:
        value = loss(logits, target)
        value.backward()
        loss(logits, target).backward()  # a second step (EMA statistics take their other branch)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    expected = build_loss(cfg, context())(logits.detach().cpu(), target.cpu())
    torch.testing.assert_close(value.detach().cpu(), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "preset, base, expected",
    [
        ("recall_ema", "recall", {"statistics": "ema", "momentum": 0.9}),
        ("recall_ema_slow", "recall", {"statistics": "ema", "momentum": 0.99}),
        ("recall_soft", "recall", {"soft": True, "statistics": "batch"}),
        ("recall_union", "recall", {"denominator": "union", "statistics": "batch"}),
        ("recall_global", "recall", {"sync": True, "statistics": "batch"}),
        ("recall_ema_slow_union", "recall", {"denominator": "union", "statistics": "ema", "momentum": 0.99}),
        ("weighted_ce_frequency", "weighted_ce", {"mode": "median_frequency"}),
    ],
)
def test_a_preset_is_its_loss_with_only_its_own_keys_changed(preset, base, expected):
    from recallseg.config.compose import compose_checked

    composed, original = (dict(compose_checked("train", [f"loss={name}"]).loss) for name in (preset, base))
    assert {key: value for key, value in composed.items() if original.get(key) != value} == {
        key: value for key, value in expected.items() if original.get(key) != value
    }
    assert all(composed[key] == value for key, value in expected.items())
