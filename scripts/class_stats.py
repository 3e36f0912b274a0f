"""Per-class pixel counts of a dataset split: the same as ``recallseg-class-stats`` (see recallseg/commands/class_stats.py)."""

from recallseg.commands.class_stats import main

if __name__ == "__main__":
    main()
