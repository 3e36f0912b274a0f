"""Compare losses under identical conditions: one Hydra multirun, then a summary.

    recallseg-compare                                            # ce, weighted_ce, recall; seed 0
    recallseg-compare --losses ce,recall,focal,lovasz --seeds 0,1,2 -- trainer.max_iters=2000
    recallseg-compare --launcher joblib -- hydra.launcher.n_jobs=2        # two runs at a time on this machine
    recallseg-compare --launcher submitit_slurm -- hydra.launcher.partition=gpu hydra.launcher.gpus_per_node=1
    recallseg-compare --summarize outputs/multirun/compare_2026-11-26_12-00-00   # summarise an existing sweep

Every loss runs with the same seeds, iterations and data (anything after `--` is passed to
training for all runs, Hydra launcher options included). The tables list the losses in the
order given. Writes, into the sweep directory: `comparison.md` (means over seeds, with the
standard deviation when there are several, and the code, versions and machine the runs ran
on), `comparison.csv` (every run: mIoU, mAcc, mPrecision, aAcc, per-class IoU, accuracy and
precision, and its code, versions and machine) and `comparison.png` (bar chart).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import subprocess
import sys
from datetime import datetime
from pathlib import Path

from recallseg.atomic_files import atomic_write

MAIN_METRICS = ("mIoU", "mAcc", "mPrecision", "aAcc")
# The columns of comparison.csv that say where a run came from: (header, where in its record).
ENVIRONMENT_COLUMNS = (
    ("recallseg", ("code", "recallseg")), ("git commit", ("code", "git_commit")), ("uncommitted changes", ("code", "git_dirty")),
    ("python", ("versions", "python")), ("torch", ("versions", "torch")), ("torch CUDA", ("versions", "torch_cuda")),
    ("cpu", ("machine", "cpu")), ("gpu", ("machine", "gpu")), ("processes", ("machine", "processes")),
    ("precision", ("machine", "precision")), ("channels_last", ("machine", "channels_last")), ("config hash", ("config_hash",)),
)  # fmt: skip


def sweep_command(losses: list[str], seeds: list[str], sweep_dir: Path, overrides: list[str], launcher: str | None = None) -> list[str]:
    """The training multirun: every loss with every seed, on ``launcher`` (Hydra's basic one when None).

    Seeds are the outer loop, so a sweep cut short has every loss at its first seeds."""
    return [
        sys.executable, "-m", "recallseg.commands.train", "-m", f"seed={','.join(seeds)}", f"loss={','.join(losses)}",
        f"hydra.sweep.dir={sweep_dir}", "hydra.sweep.subdir=${hydra:runtime.choices.loss}_seed${seed}",
        *([f"hydra/launcher={launcher}"] if launcher else []), *overrides,
    ]  # fmt: skip


def run_sweep(losses: list[str], seeds: list[str], sweep_dir: Path, overrides: list[str], launcher: str | None = None) -> None:
    command = sweep_command(losses, seeds, sweep_dir, overrides, launcher)
    print("running:", " ".join(command), flush=True)
    result = subprocess.run(command)
    if result.returncode != 0:
        raise SystemExit(f"error: the sweep failed (exit status {result.returncode}); see the runs' train.log under {sweep_dir}")


def swept_losses(sweep_dir: Path) -> list[str]:
    """The losses in the order the sweep was given them (Hydra's multirun.yaml), or none."""
    multirun = sweep_dir / "multirun.yaml"
    if not multirun.is_file():
        return []
    from omegaconf import OmegaConf

    for override in OmegaConf.load(multirun).hydra.overrides.task:
        if str(override).startswith("loss="):
            return str(override).split("=", 1)[1].split(",")
    return []


def collect(sweep_dir: Path) -> list[dict]:
    """One row per finished run of the sweep: its loss, seed, iterations and metrics."""
    rows = []
    for metrics_file in sorted(sweep_dir.glob("*/metrics.json")):
        run = metrics_file.parent
        config_file = run / ".hydra" / "config.yaml"
        hydra_file = run / ".hydra" / "hydra.yaml"
        if not config_file.is_file():
            continue
        from omegaconf import OmegaConf

        config = OmegaConf.load(config_file)
        choice = OmegaConf.load(hydra_file).hydra.runtime.choices.get("loss") if hydra_file.is_file() else config.loss._target_
        rows.append({"run_dir": run.name, "loss": choice, "seed": config.seed, "iterations": config.trainer.max_iters, **json.loads(metrics_file.read_text())})
    if not rows:
        raise SystemExit(f"error: no finished runs (metrics.json) under {sweep_dir}; give the sweep directory of a finished comparison")
    return rows


def in_order(rows: list[dict], losses: list[str]) -> list[dict]:
    """``rows`` with the losses in the order given (others after them, as found), seeds ascending."""
    position = {loss: i for i, loss in enumerate(losses)}
    return sorted(rows, key=lambda r: (position.get(r["loss"], len(position)), str(r["seed"])))


def fmt(values: list[float]) -> str:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return "n/a"
    mean = 100 * statistics.fmean(values)
    return f"{mean:.2f} ± {100 * statistics.stdev(values):.2f}" if len(values) > 1 else f"{mean:.2f}"


def recorded(run: object, where: tuple[str, ...]) -> object:
    """The value at ``where`` in a run's record: "unknown" where the record (or its part) could not be
    read, as for runs that recorded none; empty where it does not apply (no GPU, no git checkout)."""
    for key in where:
        if not isinstance(run, dict):
            return "unknown"
        run = run.get(key)
    return "" if run is None else run


def environment_lines(rows: list[dict]) -> list[str]:
    """The code, versions and machine of the runs: once when all share them, else once per group of runs."""
    from recallseg.runtime.environment import describe_environment

    groups: dict[tuple[str, ...], list[str]] = {}
    for r in rows:
        groups.setdefault(tuple(describe_environment(r.get("run"))), []).append(r["run_dir"])
    lines = []
    for described, runs in groups.items():
        lines += ["", "Environment" + ("" if len(groups) == 1 else f" of {', '.join(runs)}") + ":", ""]
        lines += [f"- {line}" for line in described]
    return lines


def summarize(sweep_dir: Path, rows: list[dict]) -> str:
    losses = list(dict.fromkeys(r["loss"] for r in rows))
    classes = list(rows[0]["per_class"])
    seeds = sorted({r["seed"] for r in rows})
    by_loss = {loss: [r for r in rows if r["loss"] == loss] for loss in losses}
    lines = [f"Seeds {seeds}, {rows[0]['iterations']} iterations each; values in percent" + (" (mean ± std over seeds)" if len(seeds) > 1 else "") + ".", ""]
    lines += ["| loss | " + " | ".join(MAIN_METRICS) + " |", "|---|" + "---|" * len(MAIN_METRICS)]
    for loss in losses:
        lines.append(f"| {loss} | " + " | ".join(fmt([r[m] for r in by_loss[loss]]) for m in MAIN_METRICS) + " |")
    for key, title in (("acc", "Per-class accuracy (recall)"), ("precision", "Per-class precision"), ("iou", "Per-class IoU")):
        lines += ["", f"{title}:", "", "| loss | " + " | ".join(classes) + " |", "|---|" + "---|" * len(classes)]
        for loss in losses:
            lines.append(f"| {loss} | " + " | ".join(fmt([r["per_class"][c][key] for r in by_loss[loss]]) for c in classes) + " |")
    lines += environment_lines(rows)
    markdown = "\n".join(lines) + "\n"
    with atomic_write(sweep_dir / "comparison.md") as handle:
        handle.write(markdown)

    with atomic_write(sweep_dir / "comparison.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        header = ["loss", "seed", "iterations", *MAIN_METRICS]
        for c in classes:
            header += [f"{c} IoU", f"{c} acc", f"{c} precision"]
        writer.writerow(header + [name for name, _ in ENVIRONMENT_COLUMNS])
        for r in rows:
            line = [r["loss"], r["seed"], r["iterations"], *[r[m] for m in MAIN_METRICS]]
            for c in classes:
                line += [r["per_class"][c][k] for k in ("iou", "acc", "precision")]
            writer.writerow(line + [recorded(r.get("run"), where) for _, where in ENVIRONMENT_COLUMNS])
    plot(sweep_dir / "comparison.png", losses, by_loss, classes)
    return markdown


def plot(path: Path, losses: list[str], by_loss: dict, classes: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    def mean(values):
        values = [v for v in values if v is not None and not math.isnan(v)]
        return 100 * statistics.fmean(values) if values else 0.0

    fig, axes = plt.subplots(1, 2, figsize=(14, 4.5), gridspec_kw={"width_ratios": [1, 2.4]})
    width = 0.8 / len(losses)
    x = np.arange(len(MAIN_METRICS))
    for i, loss in enumerate(losses):
        axes[0].bar(x + i * width, [mean([r[m] for r in by_loss[loss]]) for m in MAIN_METRICS], width, label=loss)
    axes[0].set_xticks(x + width * (len(losses) - 1) / 2, MAIN_METRICS)
    axes[0].set_ylabel("percent")
    axes[0].set_title("means")
    x = np.arange(len(classes))
    for i, loss in enumerate(losses):
        axes[1].bar(x + i * width, [mean([r["per_class"][c]["acc"] for r in by_loss[loss]]) for c in classes], width, label=loss)
    axes[1].set_xticks(x + width * (len(losses) - 1) / 2, classes, rotation=30, ha="right")
    axes[1].set_title("per-class accuracy (recall)")
    axes[1].legend(loc="lower left")
    fig.tight_layout()
    try:
        with atomic_write(path, "wb") as handle:
            fig.savefig(handle, format="png", dpi=110)
    finally:
        plt.close(fig)


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recallseg-compare", description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__
    )
    parser.add_argument("--losses", default="ce,weighted_ce,recall", help="comma list of loss config names, in the order the tables list them")
    parser.add_argument("--seeds", default="0", help="comma list of seeds")
    parser.add_argument("--launcher", default=None, help="Hydra launcher: basic (one run after another, the default), joblib, submitit_local, submitit_slurm")
    parser.add_argument("--out", type=Path, default=None, help="sweep directory (default outputs/multirun/compare_<time>)")
    parser.add_argument("--summarize", type=Path, default=None, help="only summarise this existing sweep directory")
    parser.add_argument("overrides", nargs="*", help="training overrides for every run (after --)")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    losses = [loss for loss in args.losses.split(",") if loss]
    if args.summarize:
        sweep_dir = args.summarize
        if not sweep_dir.is_dir():
            raise SystemExit(f"error: --summarize {sweep_dir}: no such directory; give the sweep directory of a comparison")
        given = "--losses" in (sys.argv[1:] if argv is None else argv)
        losses = losses if given else swept_losses(sweep_dir) or losses
    else:
        sweep_dir = args.out or Path("outputs") / "multirun" / f"compare_{datetime.now():%Y-%m-%d_%H-%M-%S}"
        run_sweep(losses, args.seeds.split(","), sweep_dir, args.overrides, args.launcher)
    print(summarize(sweep_dir, in_order(collect(sweep_dir), losses)))
    print(f"wrote {sweep_dir / 'comparison.md'}, comparison.csv and comparison.png")


if __name__ == "__main__":
    main()
