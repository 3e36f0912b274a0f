"""Per-class pixel counts of a dataset split: the same as ``recallseg-class-stats`` (see recallseg/tools/class_stats.py)."""

from recallseg.tools.class_stats import main

if __name__ == "__main__":
    main()
