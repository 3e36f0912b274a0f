"""Compare losses under identical conditions: one Hydra multirun, then a summary.

    python scripts/compare_losses.py                                   # ce, weighted_ce, recall; seed 0
    python scripts/compare_losses.py --losses ce,recall,focal,lovasz --seeds 0,1,2 -- trainer.max_iters=2000
    python scripts/compare_losses.py --summarize multirun/2026-11-26/12-00-00   # summarise an existing sweep

Every loss runs with the same seeds, iterations and data (anything after `--` is passed to
train.py for all runs). Writes, into the sweep directory: `comparison.md` (means over seeds,
with the standard deviation when there are several), `comparison.csv` (every run: mIoU, mAcc,
mPrecision, aAcc and per-class IoU, accuracy and precision) and `comparison.png` (bar chart).
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

REPO = Path(__file__).resolve().parent.parent
MAIN_METRICS = ("mIoU", "mAcc", "mPrecision", "aAcc")


def run_sweep(losses: list[str], seeds: list[str], sweep_dir: Path, overrides: list[str]) -> None:
    command = [
        sys.executable, str(REPO / "train.py"), "-m", f"loss={','.join(losses)}", f"seed={','.join(seeds)}",
        f"hydra.sweep.dir={sweep_dir}", "hydra.sweep.subdir=${hydra:runtime.choices.loss}_seed${seed}", *overrides,
    ]
    print("running:", " ".join(command), flush=True)
    subprocess.run(command, cwd=REPO, check=True)


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
        choice = OmegaConf.load(hydra_file).hydra.runtime.choices.get("loss") if hydra_file.is_file() else config.loss.name
        rows.append({"run": run.name, "loss": choice, "seed": config.seed, "iterations": config.trainer.max_iters, **json.loads(metrics_file.read_text())})
    if not rows:
        raise SystemExit(f"no finished runs (metrics.json) under {sweep_dir}")
    return rows


def fmt(values: list[float]) -> str:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return "n/a"
    mean = 100 * statistics.fmean(values)
    return f"{mean:.2f} ± {100 * statistics.stdev(values):.2f}" if len(values) > 1 else f"{mean:.2f}"


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
    markdown = "\n".join(lines) + "\n"
    (sweep_dir / "comparison.md").write_text(markdown)

    with open(sweep_dir / "comparison.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        header = ["loss", "seed", "iterations", *MAIN_METRICS]
        for c in classes:
            header += [f"{c} IoU", f"{c} acc", f"{c} precision"]
        writer.writerow(header)
        for r in rows:
            line = [r["loss"], r["seed"], r["iterations"], *[r[m] for m in MAIN_METRICS]]
            for c in classes:
                line += [r["per_class"][c][k] for k in ("iou", "acc", "precision")]
            writer.writerow(line)
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
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--losses", default="ce,weighted_ce,recall", help="comma list of loss config names")
    parser.add_argument("--seeds", default="0", help="comma list of seeds")
    parser.add_argument("--out", type=Path, default=None, help="sweep directory (default multirun/compare_<time>)")
    parser.add_argument("--summarize", type=Path, default=None, help="only summarise this existing sweep directory")
    parser.add_argument("overrides", nargs="*", help="train.py overrides for every run (after --)")
    args = parser.parse_args()
    if args.summarize:
        sweep_dir = args.summarize
    else:
        sweep_dir = args.out or REPO / "multirun" / f"compare_{datetime.now():%Y-%m-%d_%H-%M-%S}"
        run_sweep(args.losses.split(","), args.seeds.split(","), sweep_dir, args.overrides)
    print(summarize(sweep_dir, collect(sweep_dir)))
    print(f"wrote {sweep_dir / 'comparison.md'}, comparison.csv and comparison.png")


if __name__ == "__main__":
    main()
