"""The training loop and what it builds, logs and saves."""
