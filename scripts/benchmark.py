"""The benchmarks (step, loss, data, inference): the same as ``recallseg-benchmark`` (see recallseg/tools/benchmark.py)."""

from recallseg.tools.benchmark import main

if __name__ == "__main__":
    main()
