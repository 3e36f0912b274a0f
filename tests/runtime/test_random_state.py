"""Random states across resumes and ranks (``runtime.random_state``)."""

import random

import numpy as np
import torch

from recallseg.runtime.random_state import rank_seed, rng_state, set_rng_state


def test_rank_seeds_are_the_run_seed_plus_7919_per_rank_plus_the_iteration():
    assert [rank_seed(3, rank) for rank in range(3)] == [3, 3 + 7919, 3 + 2 * 7919]
    assert rank_seed(3, 1, iteration=40) == 3 + 7919 + 40
    # rank r of seed s never meets rank 0 of a nearby seed (a sweep over seeds 0..999 on 8 ranks)
    seeds = [rank_seed(seed, rank) for seed in range(1000) for rank in range(8)]
    assert len(set(seeds)) == len(seeds)


def test_a_restored_state_repeats_python_numpy_and_torch_draws():
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    state = rng_state()
    expected = (random.random(), float(np.random.rand()), float(torch.rand(())))
    random.seed(2), np.random.seed(2), torch.manual_seed(2)
    set_rng_state(state)
    assert (random.random(), float(np.random.rand()), float(torch.rand(()))) == expected
