"""The commands besides training and evaluation: predict, export, compare_losses, class_stats,
benchmark. Each is installed as ``recallseg-<name>`` and runs from any directory."""
