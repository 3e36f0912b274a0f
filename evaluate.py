"""Score a checkpoint: python evaluate.py checkpoint=<run dir>/checkpoints/best.pt [dataset.split=test ...]"""

from recallseg.commands.evaluate import eval_main

if __name__ == "__main__":
    eval_main()
