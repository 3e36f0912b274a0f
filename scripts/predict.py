"""Segment your own images: the same as ``recallseg-predict`` (see recallseg/tools/predict.py)."""

from recallseg.tools.predict import cli

if __name__ == "__main__":
    cli()
