"""Train a segmentation model: python train.py loss=recall trainer.max_iters=1000"""

from recallseg.commands.train import train_main

if __name__ == "__main__":
    train_main()
