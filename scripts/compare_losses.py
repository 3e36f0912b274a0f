"""Compare losses in one sweep: the same as ``recallseg-compare`` (see recallseg/commands/compare_losses.py)."""

from recallseg.commands.compare_losses import main

if __name__ == "__main__":
    main()
