"""Segment your own images: the same as ``recallseg-predict`` (see recallseg/commands/predict.py)."""

from recallseg.commands.predict import cli, main  # noqa: F401  (main: for callers that import this file)

if __name__ == "__main__":
    cli()
