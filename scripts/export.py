"""Export a checkpoint to ONNX: the same as ``recallseg-export`` (see recallseg/commands/export.py)."""

from recallseg.commands.export import cli, main  # noqa: F401  (main: for callers that import this file)

if __name__ == "__main__":
    cli()
