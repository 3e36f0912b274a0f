"""The command-line programs (train, evaluate, predict, export, compare, class-stats, benchmark)."""
