"""The benchmarks (step, loss, data, inference): the same as ``recallseg-benchmark`` (see recallseg/commands/benchmark/)."""

from recallseg.commands.benchmark import main

if __name__ == "__main__":
    main()
