"""The high-rate ECSQ gap πe/6 (Gish & Pierce 1968)."""

import math

import numpy as np
import pytest

import rdq.limits as L
from rdq.limits import ecsq


def test_ecsq_constants():
  assert ecsq.ECSQ_GAP == pytest.approx(math.pi * math.e / 6)
  assert ecsq.ECSQ_GAP_BITS == pytest.approx(0.25461, abs=5e-6)  # "0.255 bit" (WaterSIC)
  np.testing.assert_allclose(ecsq.ecsq_distortion(3.0), math.pi * math.e / 6 / 64)
  with pytest.raises(ValueError):
    ecsq.ecsq_distortion(0.0)


def test_single_definition_shared_by_the_limits():
  import importlib

  for mod in ("rdq.quantizers.scalar_prediction", "rdq.limits.waterfill"):
    assert importlib.import_module(mod).ECSQ_GAP_BITS is ecsq.ECSQ_GAP_BITS
  assert L.ECSQ_GAP_BITS == ecsq.ECSQ_GAP_BITS
