"""``python train.py ...`` / ``recallseg-train ...``: compose and check the config (a mistake costs no
run directory), claim the run directory, then Hydra runs the training task."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Sequence

import hydra
from omegaconf import DictConfig, OmegaConf

from recallseg.commands.user_errors import user_errors
from recallseg.config.compose import CONFIG_PATH, compose_checked, runs_a_job


def writes_the_run() -> bool:
    """Whether this process is the one that writes the run directory (rank 0 under torchrun)."""
    return os.environ.get("RANK", "0") == "0"


def as_config(data: dict) -> DictConfig:
    """Plain, resolved config data as the DictConfig the trainer reads: every ``${`` in it stays text."""
    from recallseg.checkpoints.stored_data import escape_interpolations

    return OmegaConf.create(escape_interpolations(data))


def run_training(cfg: DictConfig, typed: Sequence[str] = ()) -> float:
    """The training task: check, claim the run directory, choose the start (refusing an existing run
    without ``resume``), build, record the config, train. A resumed run trains with its checkpoint's
    config and the ``typed`` overrides (the keys the user typed; ``checkpoints.resume_config``)."""
    from recallseg.checkpoints.resume import resume_start
    from recallseg.checkpoints.resume_config import resumed_config
    from recallseg.config.compose import interpolation_links
    from recallseg.config.schema import validate_train_config
    from recallseg.runtime.openmp import passive_wait_note
    from recallseg.training.run_directory import claim_run_directory, record_config, release_run_directory
    from recallseg.training.smoke import smoke_config
    from recallseg.training.trainer import Trainer

    with user_errors(log_to_run=True):
        config = validate_train_config(cfg)
        run_dir = Path(config["output_dir"])
        if writes_the_run():  # before anything reads the directory's checkpoints or builds the run
            claim_run_directory(run_dir)
        try:
            start = resume_start(run_dir / "checkpoints", config["resume"])
            named = None
            if start.state is not None:  # the run's own config, not the defaults
                config, named = resumed_config(start.state.get("config"), config, typed, start.path, interpolation_links(cfg))
                config = validate_train_config(as_config(config))
            config, smoke_changes = smoke_config(as_config(config))
            if smoke_changes:
                logging.getLogger("recallseg").info("smoke run (trainer.smoke=true, not resumable): %s", ", ".join(smoke_changes))
            note = passive_wait_note(config.trainer.omp_passive)
            if note:
                logging.getLogger("recallseg").warning(note)
            trainer = Trainer(config, start=start, named_by_user=named)
            trainer.choose_start()  # may refuse the run: before anything is written
            if trainer.runtime.is_main:
                record_config(run_dir, config, resumed=start.state is not None)
            metrics = trainer.fit()
        finally:
            release_run_directory(run_dir)
    # The monitored value, for Hydra sweepers; NaN when the run stopped before validating.
    return metrics.get(config.trainer.monitor.removeprefix("val/"), float("nan"))


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="train")
def _train_app(cfg: DictConfig) -> float:
    from hydra.core.hydra_config import HydraConfig

    return run_training(cfg, list(HydraConfig.get().overrides.task))


def default_run_root(argv: list[str]) -> Path:
    """The part of ``hydra.run.dir`` that exists before Hydra fills in the date and time (``outputs``)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(CONFIG_PATH, version_base="1.3"):
            cfg = compose("train", overrides=argv, return_hydra_config=True)
        pattern = str(OmegaConf.to_container(cfg.hydra.run, resolve=False)["dir"])
    finally:
        GlobalHydra.instance().clear()
    fixed = pattern.split("${", 1)[0]
    return Path(fixed or ".") if fixed.endswith("/") or fixed == pattern else Path(fixed).parent


def compose_resumable(argv: list[str]) -> DictConfig:
    """``compose_checked`` of the command line; on a resume, a key the defaults lack (of a stored
    dataset other than the default, say) is refused with how to set it: ``++key=value``."""
    from recallseg.errors import ConfigError

    try:
        return compose_checked("train", argv)
    except ConfigError as error:
        resuming = any(arg.split("=", 1)[0].lstrip("+") == "resume" and not arg.endswith("=null") for arg in argv)
        if not resuming or error.problem != "is not a known option":
            raise
        raise ConfigError(
            error.key, "is not a key of the default config", f"to set a key of the resumed run's stored config that the defaults lack, write ++{error.key}=<value>"
        ) from None


def train_main() -> None:
    """``python train.py ...`` and ``recallseg-train ...``."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from recallseg.config.schema import validate_train_config
    from recallseg.runtime.openmp import restart_with_passive_wait
    from recallseg.training.run_directory import check_writable, claim_run_directory, release_run_directory
    from recallseg.training.smoke import check_smoke

    argv = sys.argv[1:]
    claimed = None
    try:
        if runs_a_job(argv):
            with user_errors():
                config = validate_train_config(compose_resumable(argv))
                check_smoke(config)
                restart_with_passive_wait(config["trainer"]["omp_passive"])  # before anything is claimed
                run_dirs = [str(o.value()) for o in OverridesParser.create().parse_overrides(argv) if o.key_or_group == "hydra.run.dir"]
                if run_dirs:  # claimed before Hydra opens train.log in it
                    if writes_the_run():
                        claimed = run_dirs[-1]
                        claim_run_directory(claimed)
                    check_writable(run_dirs[-1])
                else:  # Hydra creates the dated directory under it, with a traceback where it cannot
                    check_writable(default_run_root(argv))
        else:  # a sweep's jobs compose their configs later, in this process: the option as given here
            restart_with_passive_wait("trainer.omp_passive=true" in argv)
        _train_app()
    finally:
        if claimed is not None:
            release_run_directory(claimed)


if __name__ == "__main__":  # python -m recallseg.commands.train: for tools that start training in a subprocess
    train_main()
