"""Tests of the two innermost Leech shells as a streamed universal codebook
(rdq.quantizers.leech_shells, StreamCodebook): class counts against the theta series, lattice
membership and norms, no duplicates, the streamed encoder against the stored one, and the rate."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rdq.quantizers.leech import is_leech_point, leech_minimal_vectors
from rdq.quantizers.leech_shells import LEECH_BALL_CLASSES, LEECH_BALL_SIZE, leech_ball_int
from rdq.quantizers.universal import (
    LEECH_SHELL_SIZES,
    Codebook,
    StreamCodebook,
    gaussian_codebook,
    leech_codebook,
    rate_gap,
    shannon_power,
)

_ball = jax.jit(leech_ball_int)


def _points_at(cb, idx):
  return cb.decode(idx)


def _random_psd(rng, n, num):
  a = rng.standard_normal((num, n, n)) * rng.lognormal(0, 1.5, (num, 1, n))
  return (a @ np.swapaxes(a, 1, 2) / n).astype(np.float32)
_STARTS = np.cumsum([0] + [c[2] for c in LEECH_BALL_CLASSES])


def _theta_leech(m: int) -> int:
  """Number of Λ24 vectors of unimodular norm 2m: (65520/691)(σ₁₁(m) − τ(m)) (SPLAG Ch. 4, Sec. 11;
  Ch. 7, Sec. 6), τ from the q-expansion of Δ = q ∏ (1 − qⁿ)²⁴."""
  poly = np.zeros(m + 1, dtype=object)
  poly[0] = 1
  for n in range(1, m + 1):
    for _ in range(24):
      poly[n:] = poly[n:] - poly[:-n].copy()
  tau = poly[m - 1]
  sigma11 = sum(d**11 for d in range(1, m + 1) if m % d == 0)
  num = 65520 * (sigma11 - tau)
  assert num % 691 == 0
  return num // 691


def test_class_counts_are_the_theta_series():
  assert [_theta_leech(m) for m in (1, 2, 3)] == [0, 196560, 16773120]  # τ(1..3) = 1, −24, 252
  counts = {}
  for _, norm, size in LEECH_BALL_CLASSES:
    counts[norm] = counts.get(norm, 0) + size
  assert counts == {0: 1, 32: 196560, 48: 16773120}  # integer norm = 8 × unimodular norm
  assert [c[2] for c in LEECH_BALL_CLASSES[4:]] == [5275648, 8290304, 98304, 3108864]
  assert LEECH_BALL_SIZE == sum(LEECH_SHELL_SIZES) == 16969681


def test_every_class_is_in_the_lattice_with_its_norm_and_no_duplicates():
  rng = np.random.default_rng(0)
  idx = [np.arange(s, min(s + 64, e)) for s, e in zip(_STARTS[:-1], _STARTS[1:])]  # each class's first
  idx += [np.arange(max(s, e - 64), e) for s, e in zip(_STARTS[:-1], _STARTS[1:])]  # and last indices
  idx.append(rng.integers(0, LEECH_BALL_SIZE, 50_000))
  idx = np.unique(np.concatenate(idx)).astype(np.int32)
  v = np.asarray(_ball(jnp.asarray(idx))).astype(np.int64)
  assert is_leech_point(v).all()
  cls = np.searchsorted(_STARTS, idx, side="right") - 1
  norms = np.array([c[1] for c in LEECH_BALL_CLASSES])[cls]
  np.testing.assert_array_equal(np.sum(v * v, axis=1), norms)
  assert len(np.unique(v, axis=0)) == len(idx)  # distinct indices, distinct vectors
  # the first shell is exactly the 196 560 minimal vectors of rdq.quantizers.leech (as a set)
  first = np.asarray(_ball(jnp.arange(1, 196561, dtype=jnp.int32))).astype(np.int64)
  np.testing.assert_array_equal(np.unique(first, axis=0), np.unique(leech_minimal_vectors().astype(np.int64), axis=0))


def test_class_shapes_and_sign_rules():
  """Per class: the shape of |x| and the parity of the number of minus signs (SPLAG Table 4.13)."""
  for c, (name, _, size) in enumerate(LEECH_BALL_CLASSES[1:], start=1):
    idx = np.linspace(_STARTS[c], _STARTS[c] + size - 1, 4096).astype(np.int32)
    v = np.asarray(_ball(jnp.asarray(idx)))
    shapes = {tuple(sorted(np.abs(r).tolist(), reverse=True)) for r in v}
    assert len(shapes) == 1, name
    shape = shapes.pop()
    want = {1: (4, 4) + (0,) * 22, 2: (2,) * 8 + (0,) * 16, 3: (3,) + (1,) * 23, 4: (2,) * 12 + (0,) * 12,
            5: (3,) * 3 + (1,) * 21, 6: (5,) + (1,) * 23, 7: (4,) + (2,) * 8 + (0,) * 15}[c]
    assert shape == want, name
    if c in (2, 4, 7):  # minus signs among the ±2 entries: even on octads/dodecads, odd with the ±4
      minus = np.sum(v == -2, axis=1) % 2
      assert np.all(minus == (1 if c == 7 else 0)), name


def test_streamed_encoder_equals_stored_encoder(key):
  """On a sub-codebook (the first 10 000 points): the same indices, bitwise; and the same rate gap."""
  cb = leech_codebook(key, shells=2)
  sub = dataclasses.replace(cb, num_points=10_000, chunk=1024)
  dense = Codebook(_points_at(sub, jnp.arange(10_000, dtype=jnp.int32)), chunk=1024)
  rng = np.random.default_rng(1)
  sig = _random_psd(rng, 24, 3)
  w = jax.random.normal(jax.random.fold_in(key, 1), (300, 24))
  np.testing.assert_array_equal(sub.encode(w, sig), dense.encode(w, sig))
  np.testing.assert_array_equal(sub.decode(sub.encode(w, sig[1])), dense.points[dense.encode(w, sig[1])])
  g = gaussian_codebook(key, 8, 1.0, stream=True, chunk=128)
  gd = Codebook(_points_at(g, jnp.arange(256, dtype=jnp.int32)), chunk=128)
  sig8 = _random_psd(rng, 8, 2)
  kw = dict(num_samples=64, scales=(1.0,), batch=32)
  a, b = rate_gap(g, sig8, jax.random.key(2), **kw), rate_gap(gd, sig8, jax.random.key(2), **kw)
  np.testing.assert_array_equal(a.gap_bits, b.gap_bits)
  np.testing.assert_array_equal(a.scale, b.scale)
  pts = np.asarray(gd.points)
  assert abs(pts.mean()) < 0.1 and pts.var() == pytest.approx(shannon_power(1.0), rel=0.15)


def test_two_shell_rate_power_and_bad_input(key):
  cb = leech_codebook(key, shells=2)
  assert isinstance(cb, StreamCodebook) and cb.num_points == 16969681
  assert cb.rate_bits == pytest.approx(math.log2(16969681) / 24) and cb.rate().side == 0.0
  assert 1.0006 < cb.rate_bits < 1.0007
  # mean power over all K points from the exact shell norms: the Shannon power at R
  idx = jnp.asarray([0, 1, 196560, 196561, 16969680], jnp.int32)
  sq = np.sum(np.asarray(_points_at(cb, idx), np.float64) ** 2, axis=1)
  unit = sq[1] / 4  # squared length per unit of unimodular norm
  np.testing.assert_allclose(sq, unit * np.array([0, 4, 4, 6, 6]), rtol=1e-5, atol=1e-6)
  mean = unit * (4 * 196560 + 6 * 16773120) / 16969681 / 24
  assert mean == pytest.approx(shannon_power(cb.rate_bits), rel=1e-5)
  with pytest.raises(ValueError, match="shells"):
    leech_codebook(key, shells=3)
  with pytest.raises(ValueError, match="multiple of 64"):
    dataclasses.replace(cb, chunk=100)
  with pytest.raises(ValueError, match="num_points"):
    dataclasses.replace(cb, num_points=1)
  with pytest.raises(ValueError, match="last axis"):
    cb.encode(jnp.zeros((3, 8)), jnp.eye(24))
