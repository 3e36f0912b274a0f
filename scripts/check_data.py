"""Check a dataset's files, every split, every problem at once: the same as ``recallseg-check-data`` (see recallseg/commands/check_data.py)."""

from recallseg.commands.check_data import main

if __name__ == "__main__":
    main()
