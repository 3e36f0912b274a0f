"""Triton kernels behind ``fused_statistics``; importing this module needs Triton.

Both passes load a tile of BLOCK_P pixels x BLOCK_C (>= C) classes from logits laid out as
N x C x (H*W) with arbitrary strides (contiguous and channels_last both qualify), and do the
softmax arithmetic in float32 whatever the logits' dtype.
"""

import triton
import triton.language as tl


@triton.jit
def _tile(logits_ptr, target_ptr, start, num_pixels, hw, stride_n, stride_c, stride_hw, num_classes, ignore_index,
          BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    """Load BLOCK_P pixels x all classes; return the pieces both passes need."""
    pix = start + tl.arange(0, BLOCK_P).to(tl.int64)
    cls = tl.arange(0, BLOCK_C)
    in_range = pix < num_pixels
    offsets = (pix // hw) * stride_n + (pix % hw) * stride_hw
    mask = in_range[:, None] & (cls[None, :] < num_classes)
    x = tl.load(logits_ptr + offsets[:, None] + cls[None, :].to(tl.int64) * stride_c, mask=mask, other=float("-inf"))
    x = x.to(tl.float32)
    y = tl.load(target_ptr + pix, mask=in_range, other=ignore_index).to(tl.int32)
    valid = in_range & (y != ignore_index)
    bad = valid & ((y < 0) | (y >= num_classes))
    # Rows past the end are all -inf: max 0 and sum 1 keep them free of inf and NaN (never stored).
    row_max = tl.where(in_range, tl.max(x, axis=1), 0.0)
    exps = tl.exp(x - row_max[:, None])
    sum_exp = tl.where(in_range, tl.sum(exps, axis=1), 1.0)
    onehot = (cls[None, :] == y[:, None]) & valid[:, None]
    return x, y, valid, bad, row_max, exps, sum_exp, onehot, pix, cls, mask

@triton.jit
def forward_kernel(logits_ptr, target_ptr, partial_ptr, num_pixels, hw, stride_n, stride_c, stride_hw,
                   num_classes, ignore_index, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    block = tl.program_id(0)
    x, y, valid, bad, row_max, exps, sum_exp, onehot, pix, cls, mask = _tile(
        logits_ptr, target_ptr, block * BLOCK_P, num_pixels, hw, stride_n, stride_c, stride_hw, num_classes,
        ignore_index, BLOCK_P, BLOCK_C)
    lse = row_max + tl.log(sum_exp)
    target_logit = tl.sum(tl.where(onehot, x, 0.0), axis=1)
    nll = tl.where(valid, lse - target_logit, 0.0)
    nll = tl.where(bad, float("nan"), nll)
    miss = valid & (target_logit < row_max)  # ties count as hits
    soft_miss = 1.0 - tl.exp(-nll)  # 1 - p(target)
    hits = onehot.to(tl.float32)
    base = partial_ptr + block.to(tl.int64) * 4 * num_classes + cls
    keep = cls < num_classes
    tl.store(base, tl.sum(hits, axis=0), mask=keep)
    tl.store(base + num_classes, tl.sum(hits * miss.to(tl.float32)[:, None], axis=0), mask=keep)
    tl.store(base + 2 * num_classes, tl.sum(hits * soft_miss[:, None], axis=0), mask=keep)
    # A bad label has no one-hot column: its NaN goes into every class's sum so the loss sees it.
    nll_cols = tl.where(onehot | bad[:, None], nll[:, None], 0.0)
    tl.store(base + 3 * num_classes, tl.sum(nll_cols, axis=0), mask=keep)

@triton.jit
def backward_kernel(logits_ptr, target_ptr, grad_sums_ptr, grad_ptr, num_pixels, hw, stride_n, stride_c,
                    stride_hw, grad_stride_n, grad_stride_c, grad_stride_hw, num_classes, ignore_index,
                    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    block = tl.program_id(0)
    # Recomputing the softmax from the logits costs arithmetic only; saving it would cost memory traffic.
    x, y, valid, bad, row_max, exps, sum_exp, onehot, pix, cls, mask = _tile(
        logits_ptr, target_ptr, block * BLOCK_P, num_pixels, hw, stride_n, stride_c, stride_hw, num_classes,
        ignore_index, BLOCK_P, BLOCK_C)
    in_classes = valid & ~bad
    scale = tl.load(grad_sums_ptr + tl.where(in_classes, y, 0), mask=in_classes, other=0.0)
    grad = scale[:, None] * (exps / sum_exp[:, None] - onehot.to(tl.float32))
    grad_offsets = (pix // hw) * grad_stride_n + (pix % hw) * grad_stride_hw
    out = grad_ptr + grad_offsets[:, None] + cls[None, :].to(tl.int64) * grad_stride_c
    tl.store(out, grad.to(grad_ptr.dtype.element_ty), mask=mask)
