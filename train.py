"""Train a segmentation model: python train.py loss=recall trainer.max_iters=1000"""

import hydra
from omegaconf import DictConfig

from recallseg.cli import run_training


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> float:
    return run_training(cfg)


if __name__ == "__main__":
    main()
