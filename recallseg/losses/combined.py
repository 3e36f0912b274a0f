"""A weighted sum of registered losses, configured in YAML (e.g. recall + 0.5 * lovasz)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from recallseg.config.schema import Option, Refusal
from recallseg.losses.registry import LossContext, SegmentationLoss, build_loss


def _named_terms(key: str, terms: Sequence[Mapping[str, Any]], section: Mapping[str, Any]) -> Refusal | None:
    # A term's other keys are options of the loss it names, checked when that loss is built.
    for index, term in enumerate(terms):
        if "name" not in term:
            return f"entry {index}, {term!r}, names no loss", "give each term name: <loss> and optionally weight: <number>"
        weight = term.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)):
            return f"entry {index} has weight {weight!r}, not a number", "give each term a number as weight (1.0 by default)"
    return None


class CombinedLoss(SegmentationLoss):
    """``sum_i weight_i * loss_i(logits, target)`` over terms that are losses of the registry.

    From YAML::

        name: combined
        terms:
          - {name: recall, weight: 1.0}
          - {name: lovasz, weight: 0.5, per_image: false}

    Each term is built with ``build_loss`` and the same ``LossContext``, so terms that need the
    training split's statistics (weighted_ce, class_balanced) get them, and stateful terms
    (recall with EMA statistics) keep their state in this module's ``state_dict``. Terms may
    themselves be ``combined``.

    Args:
        num_classes: number of classes C.
        ignore_index: label of pixels that take no part.
        terms: the built losses.
        weights: one float per term.
        names: one name per term, used as the prefix of its ``extra_logs`` keys
            (``"recall/recall_weight"``); a repeated name gets its position appended.

    Shape: logits ``(N, C)`` or ``(N, C, d1, ..., dk)``, integer target ``(N)`` or ``(N, d1, ..., dk)``; returns a scalar.
    """

    options = {"terms": Option(list, item=dict, required=True, rule=_named_terms)}

    def __init__(
        self,
        num_classes: int,
        terms: Sequence[SegmentationLoss],
        weights: Sequence[float],
        names: Sequence[str] | None = None,
        ignore_index: int = 255,
    ):
        super().__init__(num_classes, ignore_index)
        # Built modules, not config values: a caller from Python can still pair them wrongly.
        if len(terms) == 0 or len(weights) != len(terms):
            raise ValueError(f"CombinedLoss needs one or more terms and a weight for each, got {len(terms)} terms, {len(weights)} weights")
        names = [type(term).__name__ for term in terms] if names is None else list(names)
        unique = [name if names.count(name) == 1 else f"{name}{i}" for i, name in enumerate(names)]
        self.terms = nn.ModuleList(terms)
        self.weights = [float(w) for w in weights]
        self.names = unique

    @classmethod
    def from_config(cls, options: Mapping[str, Any], context: LossContext) -> "CombinedLoss":
        terms, weights, names = [], [], []
        for i, term_cfg in enumerate(options["terms"]):
            term_cfg = dict(term_cfg)
            weights.append(float(term_cfg.pop("weight", 1.0)))
            name = str(term_cfg.pop("name"))
            names.append(name)
            terms.append(build_loss(name, context, where=f"loss.terms[{i}]", **term_cfg))
        return cls(num_classes=context.num_classes, ignore_index=context.ignore_index, terms=terms, weights=weights, names=names)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total = None
        for weight, term in zip(self.weights, self.terms):
            value = weight * term(logits, target)
            total = value if total is None else total + value
        return total

    def extra_logs(self) -> dict[str, torch.Tensor]:
        logs = {}
        for name, term in zip(self.names, self.terms):
            for key, value in term.extra_logs().items():
                logs[f"{name}/{key}"] = value
        return logs
