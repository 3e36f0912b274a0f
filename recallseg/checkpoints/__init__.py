"""Checkpoint files: the format, what each holds, the stored config as data, resume, and a checkpoint's model."""

from recallseg.checkpoints.model import CheckpointModel

__all__ = ["CheckpointModel"]
