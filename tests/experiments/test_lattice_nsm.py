"""rdq/experiments/lattice_nsm.py: lattices estimated by one program give the numbers of separate runs."""

import numpy as np

from rdq.experiments.lattice_nsm import _key, estimate_group
from rdq.quantizers import lattice_from_name, normalized_second_moment


def test_group_equals_separate_estimates():
  configs = [dict(experiment="lattice_nsm", lattice=name, num_samples=64, seed=2) for name in ("z", "d3star", "e8")]
  for c, got in zip(configs, estimate_group(configs, 16)):
    want = normalized_second_moment(lattice_from_name(c["lattice"]), _key(c), 64, 16)
    assert got.n == want.n == 64
    assert np.float32(got.mean) == np.float32(want.mean) and np.float32(got.stderr) == np.float32(want.stderr), c
