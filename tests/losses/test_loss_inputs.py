"""Every loss takes what torch.nn.CrossEntropyLoss takes with class indices, (N, C) and
(N, C, d1, ..., dk), and refuses anything else in one error; recall loss's two limiting
identities hold for every shape; the own-loop example of docs/losses.md runs."""

import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from recallseg.losses import LossContext, RecallLoss, build_loss

C, IGNORE = 4, 255
SHAPES = {"nodes (N, C)": (60,), "points (N, C, L)": (3, 20), "voxels (N, C, D, H, W)": (2, 3, 2, 5)}
NAMES = ["ce", "weighted_ce", "recall", "focal", "lovasz", "ohem", "class_balanced", "soft_iou", "combined", "recall_lovasz"]
DOCS = Path(__file__).resolve().parents[2] / "docs" / "losses.md"


def loss_named(name: str) -> torch.nn.Module:
    from recallseg.losses.registry import loss_config

    section = loss_config(name) if name in ("combined", "recall_lovasz") else {"name": name}
    return build_loss(section, LossContext(num_classes=C, ignore_index=IGNORE, class_pixel_counts=lambda: torch.tensor([50.0, 30, 10, 5])))


def labelled(positions: tuple[int, ...], misses_per_class: int | None, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """float64 logits (N, C, ...) and targets (N, ...) with ignored positions, where each class has
    ``misses_per_class`` positions the model gets wrong (every position when None), the rest right."""
    generator = torch.Generator().manual_seed(seed)
    n, *rest = positions
    target = torch.randint(0, C, positions, generator=generator)
    target.view(-1)[: target.numel() // 6] = IGNORE
    target = target.view(-1)[torch.randperm(target.numel(), generator=generator)].view(positions)
    flat = target.reshape(-1)
    miss = torch.zeros_like(flat, dtype=torch.bool)
    for c in range(C):
        where = torch.nonzero(flat == c).flatten()
        assert len(where) > (misses_per_class or 0), "every class needs more positions than misses"
        miss[where if misses_per_class is None else where[:misses_per_class]] = True
    logits = torch.randn(flat.numel(), C, generator=generator, dtype=torch.float64)
    winner = torch.where(miss, (flat.clamp_max(C - 1) + 1) % C, flat.clamp_max(C - 1))  # a wrong class, or the target
    logits[torch.arange(flat.numel()), winner] += 8.0
    logits = logits.reshape(n, *rest, C).movedim(-1, 1).contiguous()
    return logits, target


@pytest.mark.parametrize("positions", SHAPES.values(), ids=SHAPES.keys())
def test_recall_loss_is_cross_entropy_when_every_position_is_missed(positions):
    logits, target = labelled(positions, misses_per_class=None)
    expected = F.cross_entropy(logits, target, ignore_index=IGNORE)  # float64 oracle
    got = RecallLoss(C, IGNORE)(logits, target)
    assert got.dtype == torch.float32 and torch.allclose(got.double(), expected, rtol=1e-6)


@pytest.mark.parametrize("positions", SHAPES.values(), ids=SHAPES.keys())
def test_recall_loss_is_inverse_frequency_weighted_cross_entropy_when_misses_are_equal(positions):
    misses = 2
    logits, target = labelled(positions, misses_per_class=misses)
    valid = target != IGNORE
    counts = torch.bincount(target[valid], minlength=C).double()
    # w_c = FN_c / N_c = misses / N_c: inverse frequency, summed over the pixels and divided by N.
    expected = F.cross_entropy(logits, target, weight=misses / counts, ignore_index=IGNORE, reduction="sum") / valid.sum()
    got = RecallLoss(C, IGNORE)(logits, target)
    assert torch.allclose(got.double(), expected, rtol=1e-6)
    assert not torch.allclose(got.double(), F.cross_entropy(logits, target, ignore_index=IGNORE), rtol=1e-3)  # the weights matter here


@pytest.mark.parametrize("name", NAMES)
def test_every_loss_takes_every_shape_as_its_pixels(name):
    """(N, C), (N, C, L) and (N, C, D, H, W) give the value of the same positions laid out as (N, C, P, 1)."""
    loss = loss_named(name)
    for positions in SHAPES.values():
        logits, target = labelled(positions, misses_per_class=1)
        logits = logits.float().requires_grad_()
        value = loss(logits, target)
        value.backward()
        as_image = loss(logits.detach().reshape(positions[0], C, -1, 1), target.reshape(positions[0], -1, 1))
        assert torch.isfinite(logits.grad).all() and torch.allclose(value, as_image, atol=1e-6), positions


@pytest.mark.parametrize("name", NAMES)
def test_every_loss_refuses_a_class_count_other_than_its_own(name):
    logits, target = labelled((2, 10), misses_per_class=1)
    loss = loss_named(name)
    for wrong in (torch.randn(2, C + 1, 10), torch.randn(2, C - 1, 10)):
        with pytest.raises(ValueError, match=rf"built for num_classes={C}, got {wrong.shape[1]} in dimension 1") as info:
            loss(wrong, target)
        assert "\n" not in str(info.value)


@pytest.mark.parametrize("name", NAMES)
def test_every_loss_refuses_a_target_that_is_not_integer_and_takes_every_integer_dtype(name):
    logits, target = labelled((2, 10), misses_per_class=1)
    logits = logits.float()
    loss = loss_named(name)
    for dtype in (torch.float32, torch.float16, torch.bool):
        with pytest.raises(ValueError, match=rf"must be an integer tensor \(torch.long\), got {dtype}; use target.long\(\)"):
            loss(logits, target.to(dtype))
    expected = loss_named(name)(logits, target)
    for dtype in (torch.int32, torch.uint8, torch.int16):
        assert torch.equal(loss_named(name)(logits, target.to(dtype)), expected), dtype


def test_a_target_whose_shape_is_not_the_logits_without_c_is_refused():
    loss = RecallLoss(C, IGNORE)
    with pytest.raises(ValueError, match=r"target shape \(2, 9\) does not match logits \(2, 4, 10\); expected \(2, 10\)"):
        loss(torch.randn(2, C, 10), torch.zeros(2, 9, dtype=torch.long))
    with pytest.raises(ValueError, match="got a 0-d or 1-d tensor"):
        loss(torch.randn(C), torch.zeros((), dtype=torch.long))


def test_the_own_loop_example_of_the_docs_runs_and_learns():
    section = DOCS.read_text().split("## In your own training loop", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)
    assert len(code.strip().splitlines()) <= 12
    scope: dict = {}
    exec(compile(code, str(DOCS), "exec"), scope)
    assert scope["loss"].dim() == 0 and torch.isfinite(scope["loss"]) and scope["step"] == 9
