"""``python train.py ...`` / ``recallseg-train``: compose and check the config (a mistake costs no
run directory), then Hydra runs the training task."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from recallseg.commands.user_errors import user_errors
from recallseg.config.compose import CONFIG_PATH, compose_checked, runs_a_job


def run_training(cfg: DictConfig) -> float:
    """The training task: check, refuse an existing run, build, record the config, train."""
    from recallseg.checkpoints.resume import refuse_existing_run
    from recallseg.training.trainer import Trainer
    from recallseg.training.run_directory import record_config
    from recallseg.config.schema import validate_train_config

    with user_errors(log_to_run=True):
        config = OmegaConf.create(validate_train_config(cfg))
        if config.resume is None:
            refuse_existing_run(Path(config.output_dir) / "checkpoints")
        trainer = Trainer(config)
        trainer.choose_start()  # may refuse the run: before anything is written
        if trainer.runtime.is_main:
            record_config(Path(config.output_dir), config)
        metrics = trainer.fit()
    # The monitored value, for Hydra sweepers; NaN when the run stopped before validating.
    return metrics.get(config.trainer.monitor.removeprefix("val/"), float("nan"))


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="train")
def _train_app(cfg: DictConfig) -> float:
    return run_training(cfg)


def train_main() -> None:
    """``python train.py ...`` and ``recallseg-train ...``."""
    from recallseg.training.run_directory import check_writable
    from recallseg.config.schema import validate_train_config

    argv = sys.argv[1:]
    if runs_a_job(argv):
        with user_errors():
            validate_train_config(compose_checked("train", argv))
            run_dirs = [arg.split("=", 1)[1] for arg in argv if arg.split("=", 1)[0] == "hydra.run.dir"]
            if run_dirs:  # before Hydra opens train.log in it
                check_writable(run_dirs[-1])
    _train_app()


if __name__ == "__main__":  # python -m recallseg.commands.train: for tools that start training in a subprocess
    train_main()
