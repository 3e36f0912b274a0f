"""Export a checkpoint to ONNX: the same as ``recallseg-export`` (see recallseg/tools/export.py)."""

from recallseg.tools.export import cli, main  # noqa: F401  (main: for callers that import this file)

if __name__ == "__main__":
    cli()
