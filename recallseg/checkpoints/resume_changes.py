"""What a resumed run changes against the config stored in its checkpoint.

Some changes cannot continue the stored run (another loss, other classes, another network or
optimizer type: the stored state would not fit or would mean something else); they are
refused, naming the keys. Every other change is applied and logged, saying that the new value
wins: the trainer is built from the new config, and the optimizer's stored hyperparameters
are replaced by the new ones after its state is loaded. A change is what the user typed on the
command line (``resume_config``), so it is an information line, not a warning.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

import torch

from recallseg.errors import UserError
from recallseg.config.compose import flatten
from recallseg.models.builder import network_options, without_downloads

log = logging.getLogger("recallseg")

# Keys expected to differ between invocations of one run.
PER_INVOCATION = ("output_dir", "resume", "trainer.stop_after", "trainer.num_workers", "evaluation.num_workers")


def config_changes(stored: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{key: (stored value, new value)}`` for every key that differs (missing: ``<unset>``)."""
    old, now = flatten(stored), flatten(new)
    changes = {}
    for key in sorted(set(old) | set(now)):
        if key.startswith(PER_INVOCATION) or key.startswith("hydra"):
            continue
        if old.get(key, "<unset>") != now.get(key, "<unset>"):
            changes[key] = (old.get(key, "<unset>"), now.get(key, "<unset>"))
    return changes


def refused_changes(stored: Mapping[str, Any], new: Mapping[str, Any], stored_classes: list[str], classes: list[str]) -> list[str]:
    """The reasons this run cannot continue the stored one (empty: it can)."""
    problems = []
    if stored.get("trainer", {}).get("smoke"):  # its data, crop and schedule were shrunk (training.smoke)
        problems.append("trainer.smoke true (a smoke run's checkpoint, not a run to continue)")
    if stored.get("loss", {}).get("_target_") != new["loss"]["_target_"]:
        problems.append(f"loss._target_ {stored.get('loss', {}).get('_target_')} -> {new['loss']['_target_']} (another loss type)")
    if list(stored_classes) != list(classes):
        problems.append(f"classes {list(stored_classes)} -> {list(classes)}")
    old_net, new_net = without_downloads(network_options(stored.get("model", {}))), without_downloads(network_options(new["model"]))
    for key in sorted(set(old_net) | set(new_net)):
        if old_net.get(key) != new_net.get(key):
            problems.append(f"model.{key} {old_net.get(key)} -> {new_net.get(key)} (another network)")
    if stored.get("optimizer", {}).get("_target_") != new["optimizer"]["_target_"]:
        problems.append(f"optimizer._target_ {stored.get('optimizer', {}).get('_target_')} -> {new['optimizer']['_target_']}")
    return problems


def check_resumable(path, stored: Mapping[str, Any], new: Mapping[str, Any], stored_classes: list[str], classes: list[str]) -> dict:
    """Refuse what cannot continue; log (information) what changes and that the new value applies. Returns the changes."""
    problems = refused_changes(stored, new, stored_classes, classes)
    if problems:
        raise UserError(
            f"resume: {path} cannot continue with this config: {'; '.join(problems)}; resume with the stored settings "
            "or start a new run (another hydra.run.dir)"
        )
    changes = config_changes(stored, new)
    for key, (old, value) in changes.items():
        log.info("resume: %s changed from %r to %r; the new value applies", key, old, value)
    return changes


def apply_optimizer_options(optimizer: torch.optim.Optimizer, scheduler, options: Mapping[str, Any]) -> None:
    """After loading the stored optimizer state, give its groups the new config's hyperparameters
    (the stored ones would otherwise win silently). The learning rate is the schedule's base."""
    for key, value in options.items():
        if key in ("_target_", "lr") or not all(key in group for group in optimizer.param_groups):
            continue
        for group in optimizer.param_groups:
            group[key] = tuple(value) if isinstance(value, list) else value
    if "lr" in options:
        base = float(options["lr"])
        scheduler.base_lrs = [base for _ in optimizer.param_groups]
        for group in optimizer.param_groups:
            group["initial_lr"] = base
        factors = [fn(scheduler.last_epoch) for fn in scheduler.lr_lambdas]
        for group, factor in zip(optimizer.param_groups, factors):
            if isinstance(group["lr"], torch.Tensor):
                group["lr"].fill_(base * factor)
            else:
                group["lr"] = base * factor
