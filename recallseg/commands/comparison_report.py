"""The report of a loss comparison: ``comparison.md`` (means ± standard deviation over seeds),
``comparison.csv`` (every run, with where it came from) and ``comparison.png`` (mIoU against
mAcc per loss, with error bars)."""

from __future__ import annotations

import csv
import math
import statistics
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


def finite(values: list) -> list[float]:
    return [v for v in values if v is not None and not math.isnan(v)]


def mean_std(values: list) -> tuple[float, float]:
    """Mean and sample standard deviation in percent (std 0 for one value, nan for none)."""
    values = finite(values)
    if not values:
        return math.nan, math.nan
    return 100 * statistics.fmean(values), 100 * statistics.stdev(values) if len(values) > 1 else 0.0


def fmt(values: list) -> str:
    if not finite(values):
        return "n/a"
    mean, std = mean_std(values)
    return f"{mean:.2f} ± {std:.2f}" if len(finite(values)) > 1 else f"{mean:.2f}"


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


def scored_on(split: str | None) -> str:
    if split is None:
        return "each run's last validation (metrics.json)"
    return f"best.pt (chosen on the validation split) scored on the {split} split"


def summarize(sweep_dir: Path, rows: list[dict], split: str | None = None) -> str:
    """Write comparison.md, comparison.csv and comparison.png into ``sweep_dir``; returns the markdown."""
    losses = list(dict.fromkeys(r["loss"] for r in rows))
    classes = list(rows[0]["per_class"])
    seeds = sorted({r["seed"] for r in rows})
    by_loss = {loss: [r for r in rows if r["loss"] == loss] for loss in losses}
    lines = [
        f"Seeds {seeds}, {rows[0]['iterations']} iterations each; {scored_on(split)}; values in percent"
        + (" (mean ± std over seeds)" if len(seeds) > 1 else "") + ".", "",
    ]  # fmt: skip
    lines += ["| loss | seeds | " + " | ".join(MAIN_METRICS) + " |", "|---|---|" + "---|" * len(MAIN_METRICS)]
    for loss in losses:
        lines.append(f"| {loss} | {len(by_loss[loss])} | " + " | ".join(fmt([r[m] for r in by_loss[loss]]) for m in MAIN_METRICS) + " |")
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
        header = ["loss", "seed", "iterations", "split", *MAIN_METRICS]
        for c in classes:
            header += [f"{c} IoU", f"{c} acc", f"{c} precision"]
        writer.writerow(header + [name for name, _ in ENVIRONMENT_COLUMNS])
        for r in rows:
            line = [r["loss"], r["seed"], r["iterations"], r.get("split", ""), *[r[m] for m in MAIN_METRICS]]
            for c in classes:
                line += [r["per_class"][c][k] for k in ("iou", "acc", "precision")]
            writer.writerow(line + [recorded(r.get("run"), where) for _, where in ENVIRONMENT_COLUMNS])
    plot(sweep_dir / "comparison.png", by_loss, scored_on(split))
    return markdown


def plot(path: Path, by_loss: dict[str, list[dict]], subtitle: str) -> None:
    """mIoU against mAcc, one point per loss at its mean over seeds, error bars one standard deviation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axis = plt.subplots(figsize=(8, 6))
    colors = plt.get_cmap("tab20").colors
    for i, (loss, runs) in enumerate(by_loss.items()):
        (x, dx), (y, dy) = mean_std([r["mAcc"] for r in runs]), mean_std([r["mIoU"] for r in runs])
        if math.isnan(x) or math.isnan(y):
            continue
        color = colors[i % len(colors)]
        axis.errorbar(x, y, xerr=dx, yerr=dy, fmt="o", color=color, capsize=3, label=f"{loss} ({len(runs)})")
        axis.annotate(loss, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8, color=color)
    axis.set_xlabel("mAcc (mean class recall), %")
    axis.set_ylabel("mIoU, %")
    axis.set_title(f"mIoU against mAcc per loss (mean ± std over seeds)\n{subtitle}", fontsize=10)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7, loc="best", title="loss (runs)", title_fontsize=7)
    fig.tight_layout()
    try:
        with atomic_write(path, "wb") as handle:
            fig.savefig(handle, format="png", dpi=120)
    finally:
        plt.close(fig)
