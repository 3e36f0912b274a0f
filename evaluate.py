"""Score a checkpoint: python evaluate.py checkpoint=<run dir>/checkpoints/best.pt [dataset.split=test ...]"""

import hydra
from omegaconf import DictConfig

from recallseg.cli import run_evaluation


@hydra.main(version_base="1.3", config_path="configs", config_name="eval")
def main(cfg: DictConfig) -> float:
    return run_evaluation(cfg)


if __name__ == "__main__":
    main()
