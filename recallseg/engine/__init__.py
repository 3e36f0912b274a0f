"""The training loop, evaluation, checkpoints and the runtime (device, precision, distribution)."""
