"""Per-class cross-entropy statistics in one pass over the logits (a Triton kernel).

Recall loss needs, per class c, the pixel count ``N_c``, the miss count ``FN_c`` and the
per-pixel NLL weighted by ``w[y_n]``. Since ``sum_n w[y_n] * nll_n = sum_c w_c * S_c`` with
``S_c`` the sum of the NLL over pixels of class c, one read of the logits can produce all of
it: per pixel the log-sum-exp, the NLL and the hit test, then per-class sums over a block of
pixels. The loss is then ``w . S / N`` on C numbers. The backward pass is a second read of the
logits that writes ``dS[y_n] * (softmax_n - onehot(y_n))``. The PyTorch path (``recall.py``)
runs log_softmax, nll_loss, amax, a histogram, an index_select and their backwards instead:
about a dozen kernels and a float32 copy of the logits.

Per-block partial sums are written to a ``[blocks, 4, C]`` buffer and summed by PyTorch, so
the result is deterministic (no float atomics) and the step never synchronises with the host.
A label outside ``[0, C)`` that is not ``ignore_index`` makes the loss and its gradient NaN:
the trainer's non-finite check then stops with a message (or, under ``nonfinite=skip``, the
GradScaler skips the step) instead of a device-side assert.

On CPU tensors the kernels run only under Triton's interpreter (``TRITON_INTERPRET=1``),
which is how the tests check them against PyTorch on a machine without a GPU.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Callable, Mapping

import torch
from torch.autograd.function import once_differentiable

from recallseg.config.schema import Option, Refusal

MAX_CLASSES = 1024  # one tile holds every class of a pixel; beyond this, use the PyTorch path
_TILE_ELEMENTS = 4096  # pixels x classes per tile: 32 fp32 values per thread at 4 warps
_FORWARD_TILES = 8  # tiles per forward program: partial sums stay < 1% of the logits' bytes


@functools.cache
def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


KERNELS = ("torch", "triton", "auto")


def _triton_installed(key: str, kernel: str, section: Mapping[str, Any]) -> Refusal | None:
    # Refused when the loss is built, where the fix is cheap, not at its first step.
    if kernel == "triton" and not triton_available():
        return "triton needs the triton package, which is not installed", f"pip install triton, or set {key}=torch"
    return None


# The ``kernel`` option of every loss with a fused path.
KERNEL = Option(str, choices=KERNELS, rule=_triton_installed)


def not_with_triton(default: Any, missing: str) -> Callable[[str, Any, Mapping[str, Any]], Refusal | None]:
    """The ``rule`` of an option the fused kernels do not implement (they ``missing``): any value but
    ``default`` is refused with ``kernel=triton``, where the fix is cheap; ``auto`` falls back to PyTorch."""

    def rule(key: str, value: Any, section: Mapping[str, Any]) -> Refusal | None:
        if value != default and section.get("kernel") == "triton":
            kernel = f"{key.rpartition('.')[0]}.kernel"
            return f"got {value}, but {kernel}=triton {missing}", f"set {key}={default}, or {kernel}=torch or auto"
        return None

    return rule


def use_fused_kernel(kernel: str, logits: torch.Tensor) -> bool:
    """Whether a loss with option ``kernel`` takes the fused path for these logits."""
    if kernel == "torch":
        return False
    if kernel == "auto":
        return logits.is_cuda and logits.dim() == 4 and logits.shape[1] <= MAX_CLASSES and triton_available()
    if not logits.is_cuda and os.environ.get("TRITON_INTERPRET") != "1":
        raise ValueError("loss.kernel=triton runs on CUDA tensors only; train on a GPU or set loss.kernel=torch (or auto)")
    return True


@functools.cache
def _kernels():
    """The kernels, imported on first use so that importing this module never needs Triton."""
    from recallseg.losses.fused.triton_kernels import backward_kernel, forward_kernel

    return forward_kernel, backward_kernel


def _launch_geometry(logits: torch.Tensor) -> tuple[tuple[int, int], int, int]:
    """Grid (pixel tiles per image, images) and tile sizes: a tile never spans two images."""
    n, c, h, w = logits.shape
    block_c = max(2, 1 << (c - 1).bit_length())
    block_p = max(16, _TILE_ELEMENTS // block_c)
    return (max(1, -(-(h * w) // block_p)), n), block_p, block_c


def _forward_tiles(tiles_per_image: int) -> tuple[int, int]:
    """(programs per image, tiles each sums): at most 8 tiles a program, spread evenly so that
    programs loop over few tiles past the image's end."""
    programs = -(-tiles_per_image // _FORWARD_TILES)
    return programs, -(-tiles_per_image // programs)


def _pixel_strides(t: torch.Tensor) -> tuple[int, int, int]:
    """(n, c, pixel) strides of an N x C x H x W tensor whose H and W flatten to one stride."""
    return t.stride(0), t.stride(1), t.stride(2) if t.shape[3] == 1 else t.stride(3)


def _flattenable(t: torch.Tensor) -> bool:
    # Contiguous and channels_last both satisfy this; so does any H == 1 or W == 1 layout.
    return t.shape[2] == 1 or t.shape[3] == 1 or t.stride(2) == t.shape[3] * t.stride(3)


class _ClassCEStatistics(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, target, num_classes, ignore_index):
        forward_kernel, _ = _kernels()
        if not _flattenable(logits):
            logits = logits.contiguous()
        target = target.contiguous()
        (tiles, images), block_p, block_c = _launch_geometry(logits)
        programs, per_program = _forward_tiles(tiles)
        grid = (programs, images)
        partial = torch.empty(grid[0] * grid[1], 4, logits.shape[1], dtype=torch.float32, device=logits.device)
        forward_kernel[grid](
            logits, target, partial, logits.shape[2] * logits.shape[3], *_pixel_strides(logits), ignore_index=ignore_index,
            NUM_CLASSES=logits.shape[1], BLOCK_P=block_p, BLOCK_C=block_c, TILES=per_program,
        )
        # Two separate tensors (not views of one), so a caller may modify the counts in place.
        # float64 keeps counts exact beyond 2**24 pixels per class, as functional.class_sums does.
        counts = partial[:, :3].sum(dim=0, dtype=torch.float64).float()
        nll_sums = partial[:, 3].sum(dim=0)
        ctx.save_for_backward(logits, target)
        ctx.ignore_index = ignore_index
        ctx.mark_non_differentiable(counts)
        return counts, nll_sums

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_counts, grad_nll_sums):
        _, backward_kernel = _kernels()
        logits, target = ctx.saved_tensors
        grid, block_p, block_c = _launch_geometry(logits)
        grad = torch.empty_like(logits)  # same strides as the (flattenable) logits
        backward_kernel[grid](
            logits, target, grad_nll_sums.float().contiguous(), grad, logits.shape[2] * logits.shape[3],
            *_pixel_strides(logits), *_pixel_strides(grad), ignore_index=ctx.ignore_index,
            NUM_CLASSES=logits.shape[1], BLOCK_P=block_p, BLOCK_C=block_c,
        )
        return grad, None, None, None


def class_ce_statistics(logits: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class ``[N_c, FN_c, soft FN_c]`` (3 x C, no gradient) and NLL sums ``S_c`` (C, differentiable).

    ``N_c`` counts non-ignored pixels labelled c; ``FN_c`` those whose target logit is below
    the largest (ties are hits, as in ``functional.target_is_top1``); ``soft FN_c`` sums
    ``1 - p_n(c)``. The gradient of ``S`` flows to ``logits`` (any float dtype, contiguous or
    channels_last); the result is float32 whatever the logits' dtype.
    """
    if logits.dim() != 4 or target.shape != (logits.shape[0], *logits.shape[2:]):
        raise ValueError(f"expected logits N x C x H x W and target N x H x W, got {tuple(logits.shape)} and {tuple(target.shape)}")
    if logits.shape[1] != num_classes:
        raise ValueError(
            f"logits have {logits.shape[1]} classes, the loss expects {num_classes}: "
            "the model's classes and the dataset's num_classes must agree"
        )
    if num_classes > MAX_CLASSES:
        raise ValueError(f"the fused kernel handles at most {MAX_CLASSES} classes, got {num_classes}; use loss.kernel=torch")
    return _ClassCEStatistics.apply(logits, target, num_classes, ignore_index)
