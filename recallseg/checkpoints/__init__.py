"""Checkpoint files: the format, what each holds, the stored config as data, resume."""
