"""Triton kernels behind ``fused_statistics``; importing this module needs Triton.

Both passes load a tile of BLOCK_P pixels x BLOCK_C (>= C) classes from logits laid out as
N x C x (H*W) with arbitrary strides (contiguous and channels_last both qualify), and do the
softmax arithmetic in float32 whatever the logits' dtype.
"""

import triton
import triton.language as tl


@triton.jit
def _tile(logits_ptr, target_ptr, tile, hw, stride_n, stride_c, stride_hw, NUM_CLASSES: tl.constexpr, ignore_index,
          BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    """Load pixel tile ``tile`` (BLOCK_P pixels) of image ``program_id(1)`` x all classes; return
    what both passes need.

    A block never straddles two images, so with unit pixel or class stride (Triton specialises
    strides equal to 1) the compiler sees contiguous addresses and vectorises the loads. The class
    count is a compile-time constant: when it is a power of two the class mask folds away, which
    is what lets channels_last loads be vectorised.
    """
    image = tl.program_id(1).to(tl.int64)
    pix = tile * BLOCK_P + tl.arange(0, BLOCK_P)
    cls = tl.arange(0, BLOCK_C)
    in_range = pix < hw
    mask = in_range[:, None] & (cls[None, :] < NUM_CLASSES)
    logits_ptr += image * stride_n
    # int64 offsets: (C - 1) * stride_c alone passes 2**31 for large images with many classes.
    x = tl.load(logits_ptr + pix[:, None].to(tl.int64) * stride_hw + cls[None, :].to(tl.int64) * stride_c, mask=mask,
                other=float("-inf"))
    x = x.to(tl.float32)
    label = tl.load(target_ptr + image * hw + pix, mask=in_range, other=ignore_index)
    valid = in_range & (label != ignore_index)
    bad = valid & ((label < 0) | (label >= NUM_CLASSES))  # before narrowing, so no label wraps into range
    y = label.to(tl.int32)
    # Rows past the end are all -inf: max 0 and sum 1 keep them free of inf and NaN (never stored).
    row_max = tl.where(in_range, tl.max(x, axis=1), 0.0)
    exps = tl.exp(x - row_max[:, None])
    sum_exp = tl.where(in_range, tl.sum(exps, axis=1), 1.0)
    onehot = (cls[None, :] == y[:, None]) & (valid & ~bad)[:, None]
    return x, y, valid, bad, row_max, exps, sum_exp, onehot, pix, cls, mask


@triton.jit
def forward_kernel(logits_ptr, target_ptr, partial_ptr, hw, stride_n, stride_c, stride_hw, NUM_CLASSES: tl.constexpr,
                   ignore_index, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, TILES: tl.constexpr):
    """Sums ``[N_c, FN_c, soft FN_c, S_c]`` over TILES consecutive tiles into ``partial[program, 4, C]``.

    Accumulating several tiles per program keeps the partial buffer (written here, summed by
    PyTorch) a small fraction of the logits' bytes even when few pixels fit in a tile.
    """
    totals = tl.zeros([BLOCK_C], dtype=tl.float32)
    misses = tl.zeros([BLOCK_C], dtype=tl.float32)
    soft_misses = tl.zeros([BLOCK_C], dtype=tl.float32)
    nll_sums = tl.zeros([BLOCK_C], dtype=tl.float32)
    for t in range(TILES):
        x, y, valid, bad, row_max, exps, sum_exp, onehot, pix, cls, mask = _tile(
            logits_ptr, target_ptr, tl.program_id(0) * TILES + t, hw, stride_n, stride_c, stride_hw, NUM_CLASSES,
            ignore_index, BLOCK_P, BLOCK_C)
        lse = row_max + tl.log(sum_exp)
        target_logit = tl.sum(tl.where(onehot, x, 0.0), axis=1)
        nll = tl.where(valid, lse - target_logit, 0.0)
        nll = tl.where(bad, float("nan"), nll)
        miss = valid & (target_logit < row_max)  # ties count as hits
        # 1 - p(target) as the other classes' share: no cancellation when p(target) is close to 1.
        soft_miss = tl.sum(tl.where(onehot, 0.0, exps), axis=1) / sum_exp
        hits = onehot.to(tl.float32)
        totals += tl.sum(hits, axis=0)
        misses += tl.sum(hits * miss.to(tl.float32)[:, None], axis=0)
        soft_misses += tl.sum(tl.where(onehot, soft_miss[:, None], 0.0), axis=0)  # no 0 * NaN from ignored pixels
        # A bad label has no one-hot column: its NaN goes into every class's sum so the loss sees it.
        nll_sums += tl.sum(tl.where(onehot | bad[:, None], nll[:, None], 0.0), axis=0)
    cls = tl.arange(0, BLOCK_C)
    program = tl.program_id(1).to(tl.int64) * tl.num_programs(0) + tl.program_id(0)
    base = partial_ptr + program * 4 * NUM_CLASSES + cls
    keep = cls < NUM_CLASSES
    tl.store(base, totals, mask=keep)
    tl.store(base + NUM_CLASSES, misses, mask=keep)
    tl.store(base + 2 * NUM_CLASSES, soft_misses, mask=keep)
    tl.store(base + 3 * NUM_CLASSES, nll_sums, mask=keep)


@triton.jit
def backward_kernel(logits_ptr, target_ptr, grad_sums_ptr, grad_ptr, hw, stride_n, stride_c, stride_hw,
                    grad_stride_n, grad_stride_c, grad_stride_hw, NUM_CLASSES: tl.constexpr, ignore_index,
                    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    """``grad[n, c] = dS[y_n] * (softmax_n(c) - [c == y_n])``, in the gradient tensor's dtype and strides."""
    # Recomputing the softmax from the logits costs arithmetic only; saving it would cost memory traffic.
    x, y, valid, bad, row_max, exps, sum_exp, onehot, pix, cls, mask = _tile(
        logits_ptr, target_ptr, tl.program_id(0), hw, stride_n, stride_c, stride_hw, NUM_CLASSES, ignore_index, BLOCK_P,
        BLOCK_C)
    in_classes = valid & ~bad
    scale = tl.load(grad_sums_ptr + tl.where(in_classes, y, 0), mask=in_classes, other=0.0)
    # A bad label made the loss NaN; its gradient is NaN too, so the GradScaler (trainer.nonfinite=skip)
    # skips the step instead of applying the other pixels' finite gradient.
    scale = tl.where(bad, float("nan"), scale)
    grad = scale[:, None] * (exps / sum_exp[:, None] - onehot.to(tl.float32))
    grad_ptr += tl.program_id(1).to(tl.int64) * grad_stride_n
    out = grad_ptr + pix[:, None].to(tl.int64) * grad_stride_hw + cls[None, :].to(tl.int64) * grad_stride_c
    tl.store(out, grad.to(grad_ptr.dtype.element_ty), mask=mask)
