"""Compare losses under identical conditions: one Hydra multirun, then a summary.

    recallseg-compare                                            # ce, weighted_ce, recall; seed 0
    recallseg-compare --losses ce,recall,focal,lovasz --seeds 0,1,2 -- trainer.max_iters=2000
    recallseg-compare --launcher joblib -- hydra.launcher.n_jobs=2        # two runs at a time on this machine
    recallseg-compare --launcher submitit_slurm -- hydra.launcher.partition=gpu hydra.launcher.gpus_per_node=1
    recallseg-compare --summarize outputs/multirun/compare_2026-11-26_12-00-00   # summarise an existing sweep
    recallseg-compare --losses ce,recall --seeds 0,1,2 --split test        # best.pt (picked on val) scored on test

Every loss runs with the same seeds, iterations and data (anything after `--` is passed to
training for all runs, Hydra launcher options included). The tables list the losses in the
order given. The same command again (same `--out`) finishes a sweep cut short: finished runs
are only validated again, interrupted ones continue from their last.pt. With `--split test`
every run's best.pt, picked on the validation split, is scored on the test split (into
`<run>/eval_test/`), so the tables carry no selection bias; without it they show each run's
last validation. Writes, into the sweep directory: `comparison.md` (means
over seeds, with the standard deviation when there are several, and the code, versions and
machine the runs ran on), `comparison.csv` (every run: mIoU, mAcc, mPrecision, aAcc, per-class
IoU, accuracy and precision, and its code, versions and machine) and `comparison.png` (mIoU
against mAcc per loss, error bars one standard deviation over seeds).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from datetime import datetime
from pathlib import Path

from recallseg.commands.comparison_report import summarize
from recallseg.runtime.signals import run_as_group


def sweep_command(losses: list[str], seeds: list[str], sweep_dir: Path, overrides: list[str], launcher: str | None = None) -> list[str]:
    """The training multirun: every loss with every seed, on ``launcher`` (Hydra's basic one when None).

    Seeds are the outer loop, so a sweep cut short has every loss at its first seeds. Every run
    has ``resume=auto``: the same command again finishes such a sweep, continuing interrupted runs
    from their last.pt and only validating finished ones again."""
    continues = [] if any(o.lstrip("+").startswith("resume=") for o in overrides) else ["resume=auto"]
    return [
        sys.executable, "-m", "recallseg.commands.train", "-m", f"seed={','.join(seeds)}", f"loss={','.join(losses)}",
        f"hydra.sweep.dir={sweep_dir}", "hydra.sweep.subdir=${hydra:runtime.choices.loss}_seed${seed}",
        *([f"hydra/launcher={launcher}"] if launcher else []), *continues, *overrides,
    ]  # fmt: skip


def run_sweep(losses: list[str], seeds: list[str], sweep_dir: Path, overrides: list[str], launcher: str | None = None) -> None:
    command = sweep_command(losses, seeds, sweep_dir, overrides, launcher)
    print("running:", " ".join(command), flush=True)
    status, stopped_by = run_as_group(command)
    if stopped_by is not None:
        print(
            f"stopped by {signal.Signals(stopped_by).name}: the runs under {sweep_dir} saved their last.pt; "
            f"the same command with --out {sweep_dir} continues the sweep",
            file=sys.stderr,
        )
        raise SystemExit(128 + stopped_by)
    if status != 0:
        raise SystemExit(f"error: the sweep failed (exit status {status}); see the runs' train.log under {sweep_dir}")


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


def finished_runs(sweep_dir: Path) -> list[Path]:
    """The run directories of the sweep whose training finished (metrics.json beside .hydra/config.yaml)."""
    return [m.parent for m in sorted(sweep_dir.glob("*/metrics.json")) if (m.parent / ".hydra" / "config.yaml").is_file()]


def scores_dir(run: Path, split: str) -> Path:
    return run / f"eval_{split}"


def score_runs(sweep_dir: Path, split: str) -> None:
    """Score every finished run's best.pt (picked on the validation split) on ``split``, into
    ``<run>/eval_<split>/``; a run already scored after its best.pt was written is left as it is."""
    from recallseg.commands.user_errors import user_errors
    from recallseg.config.compose import compose_checked
    from recallseg.evaluation.score_checkpoint import evaluate_checkpoint

    for run in finished_runs(sweep_dir):
        best, out = run / "checkpoints" / "best.pt", scores_dir(run, split)
        if not best.is_file():
            raise SystemExit(f"error: {run}: no checkpoints/best.pt to score on the {split} split; the run must have validated at least once")
        if (out / "metrics.json").is_file() and (out / "metrics.json").stat().st_mtime_ns > best.stat().st_mtime_ns:
            continue
        print(f"scoring {best} on the {split} split", flush=True)
        with user_errors():
            evaluate_checkpoint(compose_checked("eval", [f"checkpoint={best}", f"output_dir={out}"]), [f"dataset.split={split}"])


def collect(sweep_dir: Path, split: str | None = None) -> list[dict]:
    """One row per finished run of the sweep: its loss, seed, iterations and metrics (the run's own
    last validation, or its scores on ``split`` from ``score_runs``)."""
    from omegaconf import OmegaConf

    rows = []
    for run in finished_runs(sweep_dir):
        metrics_file = run / "metrics.json" if split is None else scores_dir(run, split) / "metrics.json"
        if not metrics_file.is_file():
            continue
        config = OmegaConf.load(run / ".hydra" / "config.yaml")
        hydra_file = run / ".hydra" / "hydra.yaml"
        choice = OmegaConf.load(hydra_file).hydra.runtime.choices.get("loss") if hydra_file.is_file() else config.loss._target_
        metrics = json.loads(metrics_file.read_text())
        if split is not None:  # where the weights came from: the training run's record, which the scores keep
            metrics["run"] = metrics.get("training_run")
        rows.append({"run_dir": run.name, "loss": choice, "seed": config.seed, "iterations": config.trainer.max_iters, "split": split or "val", **metrics})
    if not rows:
        raise SystemExit(f"error: no finished runs (metrics.json) under {sweep_dir}; give the sweep directory of a finished comparison")
    return rows


def in_order(rows: list[dict], losses: list[str]) -> list[dict]:
    """``rows`` with the losses in the order given (others after them, as found), seeds ascending."""
    position = {loss: i for i, loss in enumerate(losses)}
    return sorted(rows, key=lambda r: (position.get(r["loss"], len(position)), str(r["seed"])))


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recallseg-compare", description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__
    )
    parser.add_argument("--losses", default="ce,weighted_ce,recall", help="comma list of loss config names, in the order the tables list them")
    parser.add_argument("--seeds", default="0", help="comma list of seeds")
    parser.add_argument("--launcher", default=None, help="Hydra launcher: basic (one run after another, the default), joblib, submitit_local, submitit_slurm")
    parser.add_argument("--out", type=Path, default=None, help="sweep directory (default outputs/multirun/compare_<time>)")
    parser.add_argument("--summarize", type=Path, default=None, help="only summarise this existing sweep directory")
    parser.add_argument(
        "--split", default=None, help="score every run's best.pt (picked on the validation split) on this split, e.g. test; default: the runs' last validation"
    )  # fmt: skip
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
    if args.split:
        score_runs(sweep_dir, args.split)
    print(summarize(sweep_dir, in_order(collect(sweep_dir, args.split), losses), args.split))
    print(f"wrote {sweep_dir / 'comparison.md'}, comparison.csv and comparison.png")


if __name__ == "__main__":
    main()
