"""``python -m recallseg.tools.train ...``: training, for tools that start it in a subprocess."""

from ..cli import train_main

if __name__ == "__main__":
    train_main()
