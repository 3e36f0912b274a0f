"""Compare losses in one sweep: the same as ``recallseg-compare`` (see recallseg/tools/compare_losses.py)."""

from recallseg.tools.compare_losses import main

if __name__ == "__main__":
    main()
