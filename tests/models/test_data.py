"""Calibration/evaluation text: fixed, seeded, disjoint splits of stdlib docstrings."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rdq.models.data import load_splits, stdlib_passages


@pytest.fixture(scope="module")
def passages():
  return stdlib_passages()


def test_passages_filtered_and_unique(passages):
  assert len(passages) > 1000
  assert len(set(passages)) == len(passages)
  assert passages == sorted(passages)
  for p in passages:
    assert 6 <= len(p.split(" ")) <= 64
    assert ">>>" not in p and "\n" not in p and "  " not in p


@settings(max_examples=8, deadline=None)
@given(n_cal=st.integers(1, 700), n_eval=st.integers(1, 700), seed=st.integers(0, 2**31))
def test_splits_disjoint_and_sized(n_cal, n_eval, seed):
  s = load_splits(n_cal, n_eval, seed)
  assert len(s.calibration) == n_cal and len(s.evaluation) == n_eval
  assert not set(s.calibration) & set(s.evaluation)
  assert len(set(s.calibration)) == n_cal


def test_splits_deterministic_and_seeded():
  a, b = load_splits(64, 64, seed=0), load_splits(64, 64, seed=0)
  assert a == b and a.digest == b.digest
  c = load_splits(64, 64, seed=1)
  assert c.calibration != a.calibration and c.digest != a.digest
  # Growing one split does not reshuffle the other's prefix.
  assert load_splits(128, 64, seed=0).calibration[:64] == a.calibration


@pytest.mark.parametrize(
    "args, match",
    [((0, 10), "n_calibration=0"), ((10, -1), "n_eval=-1"), ((10, 10, -3), "seed=-3"), ((5000, 5000), "exceeds")],
)
def test_bad_sizes(args, match):
  with pytest.raises(ValueError, match=match):
    load_splits(*args)
