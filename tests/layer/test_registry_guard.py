"""A layer algorithm that produces a non-finite Ŵ from finite inputs raises, eagerly and under
checked jit, instead of returning NaN weights."""

import dataclasses

import jax
import jax.numpy as jnp
import pytest

import rdq.layer as L
from rdq.checks import checked
from rdq.layer import registry


@pytest.fixture
def nan_rtn(monkeypatch):
  spec = registry._REGISTRY["rtn"]

  def core(w, h, config, key=None, *, rate_bits=None, **traced):  # traced: the split's ``scalars``
    q, rep = spec.core(w, h, config, key, rate_bits=rate_bits, **traced)
    return q.at[0, 0].set(jnp.nan), rep

  monkeypatch.setitem(registry._REGISTRY, "rtn", dataclasses.replace(spec, core=core))
  return L.get("rtn")


def _inputs():
  w = jax.random.normal(jax.random.key(0), (16, 8))
  x = jax.random.normal(jax.random.key(1), (64, 16))
  return w, x.T @ x / 64


def test_non_finite_output_raises_eagerly(nan_rtn):
  w, h = _inputs()
  with pytest.raises(ValueError, match="'rtn' produced 1 non-finite entries"):
    nan_rtn(w, h, rate_bits=4.0)


def test_non_finite_output_raises_under_checked_jit(nan_rtn):
  w, h = _inputs()
  f = checked(jax.jit(lambda w, h: nan_rtn(w, h, rate_bits=4.0)[0]))
  with pytest.raises(ValueError, match="non-finite entries"):
    f(w, h)


def test_finite_output_passes():
  w, h = _inputs()
  q, _ = L.get("rtn")(w, h, rate_bits=4.0)
  assert bool(jnp.all(jnp.isfinite(q)))
