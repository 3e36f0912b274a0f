"""Check a dataset's files before training on them: every split, every problem at once.

    recallseg-check-data dataset=folder dataset.root=/path/to/your/data
    python scripts/check_data.py dataset=cityscapes num_workers=8

Reads every label and every image's header of the training, validation and evaluation splits
(``pipeline/data_check.py``) with a progress bar. A clean dataset ends with a one-paragraph
summary and exit 0; otherwise every problem is listed, then one ``error:`` line, exit 2.
Training runs the same check first (``dataset.check``, on by default), and both share its cache:
unchanged files are not read again.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from recallseg.commands.user_errors import print_error, user_errors
from recallseg.config.compose import CONFIG_PATH, compose_checked, runs_a_job
from recallseg.config.schema import DATASET_RESERVED, check_section
from recallseg.pipeline.data_check import DataCheck, check_dataset


def check_data(cfg: DictConfig) -> DataCheck:
    """Check the dataset of ``cfg``; print the summary, or every problem and raise the error that ends with exit 2."""
    dataset_cfg = OmegaConf.to_container(cfg.dataset, resolve=True)
    check_section({k: v for k, v in dataset_cfg.items() if k in DATASET_RESERVED}, DATASET_RESERVED, "dataset", allow_extra=True)
    checked = check_dataset(dataset_cfg, cfg.paths.cache_dir, num_workers=int(cfg.num_workers))
    if checked.problems:
        for line in checked.report():
            print_error(line)
        raise checked.error()
    print(checked.summary())
    return checked


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="check_data")
def _app(cfg: DictConfig) -> None:  # --help, --cfg and Hydra's other flags
    with user_errors():
        check_data(cfg)


def main() -> None:
    """``recallseg-check-data`` and ``python scripts/check_data.py``: no run directory, nothing written but the cache."""
    argv = sys.argv[1:]
    if not runs_a_job(argv):
        _app()
        return
    with user_errors():
        check_data(compose_checked("check_data", argv))


if __name__ == "__main__":
    main()
