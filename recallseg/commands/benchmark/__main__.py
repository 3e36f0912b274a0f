"""``python -m recallseg.commands.benchmark``: the same as ``recallseg-benchmark``."""

from recallseg.commands.benchmark import main

main()
