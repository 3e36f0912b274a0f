"""Math shared by the losses. Everything here is free of host-device synchronisation:
no ``.item()``, no ``torch.unique``, no boolean-mask indexing, so it can run inside a
CUDA graph and never stalls the GPU pipeline."""

from __future__ import annotations

import torch


def checked_inputs(logits: torch.Tensor, target: torch.Tensor, num_classes: int, loss: str) -> torch.Tensor:
    """The target as ``torch.long``, after checking both inputs' shapes and dtypes the way
    ``torch.nn.CrossEntropyLoss`` takes class indices: logits ``(N, C)`` or ``(N, C, d1, ..., dk)``
    with ``C == num_classes``, an integer target ``(N)`` or ``(N, d1, ..., dk)``. Shapes and dtypes
    are known on the host, so this costs no synchronisation; a mismatch raises one ValueError."""
    if not isinstance(logits, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise ValueError(f"{loss}: takes two tensors (logits, target), got {type(logits).__name__} and {type(target).__name__}")
    if logits.dim() < 2 or logits.shape[1] != num_classes:
        got = "a 0-d or 1-d tensor" if logits.dim() < 2 else f"{logits.shape[1]} in dimension 1 of logits {tuple(logits.shape)}"
        raise ValueError(f"{loss}: built for num_classes={num_classes}, got {got}; logits are (N, C) or (N, C, d1, ..., dk) with C = num_classes")
    if target.dtype.is_floating_point or target.dtype.is_complex or target.dtype == torch.bool:
        raise ValueError(f"{loss}: the target holds class indices and must be an integer tensor (torch.long), got {target.dtype}; use target.long()")
    expected = (logits.shape[0], *logits.shape[2:])
    if tuple(target.shape) != expected:
        raise ValueError(f"{loss}: target shape {tuple(target.shape)} does not match logits {tuple(logits.shape)}; expected {expected} (the logits' shape without C)")
    return target.long()


def check_labels(target: torch.Tensor, num_classes: int, ignore_index: int, loss: str) -> None:
    """Fail, as ``F.cross_entropy`` does, on a label that is neither a class id nor ``ignore_index``,
    and as it does without a host sync: on the CPU at once, on CUDA through a device-side assertion.

    The losses that compare labels with each class instead of indexing by them would otherwise
    take such a pixel as one of no class."""
    known = (target == ignore_index) | ((target >= 0) & (target < num_classes))
    torch._assert_async(known.all(), f"{loss}: a target label is neither a class id (0..{num_classes - 1}) nor the ignore index {ignore_index}")


def valid_mask(target: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """Boolean mask of pixels that take part in the loss."""
    return target != ignore_index


def safe_target(target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """``target`` with ignored pixels set to class 0, so it can index per-class tensors.

    Callers must zero those pixels' contribution through ``valid``."""
    return torch.where(valid, target, torch.zeros((), dtype=target.dtype, device=target.device))


def class_sums(labels: torch.Tensor, values: torch.Tensor | None, num_classes: int) -> torch.Tensor:
    """Per-class sums of ``values`` (counts when ``values`` is None) over pixels labelled ``0..C-1``.

    Labels outside ``[0, C)`` (the caller maps ignored pixels to ``C``) fall out of the result.
    On CPU a bincount is fastest. On CUDA counts come from ``torch.histc`` (``torch.bincount``
    would sync to size its output; a scatter into a handful of bins contends on atomics);
    weighted sums, and counts under ``torch.use_deterministic_algorithms``, from a one-hot
    compare-and-sum.
    """
    labels = labels.reshape(-1)
    if values is not None:
        values = values.reshape(-1)
    if labels.device.type == "cpu":
        counts = torch.bincount(labels, weights=values, minlength=num_classes + 1)[:num_classes]
        return counts.to(torch.float32)
    if values is None and not torch.are_deterministic_algorithms_enabled():
        # One histogram kernel that bins in shared memory per block: no C x P one-hot matrix
        # and no contended global atomics. float64 keeps counts exact beyond 2**24 pixels.
        # Values outside [0, C] (never produced by callers) would be dropped, as below.
        return torch.histc(labels.double(), bins=num_classes + 1, min=0, max=num_classes + 1)[:num_classes].float()
    classes = torch.arange(num_classes, device=labels.device, dtype=labels.dtype)
    onehot = labels.unsqueeze(0) == classes.unsqueeze(1)  # C x P
    if values is None:
        return onehot.sum(dim=1, dtype=torch.float32)
    return (onehot * values.to(torch.float32).unsqueeze(0)).sum(dim=1)


def masked_mean(per_pixel: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean of ``per_pixel`` over valid pixels; 0 (with zero gradient) when none is valid."""
    total = (per_pixel * valid).sum()
    return total / valid.sum().clamp_min(1)


def target_is_top1(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """True where the target class has the highest logit (a hit for recall).

    Ties count as hits: with bf16 logits exact ties between classes are common, and
    ``argmax``'s first-index rule would make a tied pixel a hit or a miss depending only on
    the order of the class ids. ``amax`` plus one gather is also far cheaper than ``argmax`` on CPU.
    """
    target_logit = logits.gather(1, target.unsqueeze(1)).squeeze(1)
    return target_logit >= logits.amax(dim=1)


def target_is_top1_from_log_probs(log_probs: torch.Tensor, nll: torch.Tensor) -> torch.Tensor:
    """``target_is_top1`` for a caller that already holds ``log_softmax`` output and the per-pixel NLL.

    ``-nll`` is the target's log-probability, so no gather over the logits is needed (on CPU
    that gather costs more than the rest of the hit test). ``log_softmax`` subtracts one
    constant per pixel, which keeps exact ties tied and keeps the order; only logits closer
    than float32 rounding of the log-probabilities become ties, and ties count as hits.
    """
    return -nll >= log_probs.amax(dim=1)


def hits_and_predictions_from_log_probs(log_probs: torch.Tensor, nll: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``target_is_top1_from_log_probs`` and each pixel's argmax class (the first on ties), from
    one ``max`` over classes: on CPU ``argmax(dim=1)`` alone costs about 9 times a ``max``."""
    top, predicted = log_probs.max(dim=1)
    return -nll >= top, predicted


def class_totals_and_flagged(labels: torch.Tensor, flagged: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class pixel counts and counts of ``flagged`` pixels (float32), in one ``class_sums`` pass.

    Pixel n goes to bin ``labels_n + (C + 1) * flagged_n``: one integer count over 2C + 1 bins
    instead of a count plus a weighted count. As in ``class_sums``, label ``C`` marks ignored
    pixels and falls out (bins C and 2C + 1).
    """
    bins = class_sums(labels.add(flagged, alpha=num_classes + 1), None, 2 * num_classes + 1)
    in_flagged = bins[num_classes + 1 :]
    return bins[:num_classes] + in_flagged, in_flagged
