"""rdq/experiments/causal_lm.py: budgets, the Q4_1 reproduction, closed-form gap, config and table."""

import dataclasses

import numpy as np
import pytest
from hydra import compose, initialize

from rdq.experiments import causal_lm as C


@pytest.fixture(scope="module")
def cfg():
  with initialize(version_base="1.3", config_path="../../conf"):
    return compose(config_name="causal_lm", overrides=["out_dir=/tmp/unused"])


def test_configs_compose_and_name_known_algorithms(cfg):
  assert set(cfg.algorithms) <= set(C.ALGORITHMS) and cfg.sequential is True
  with initialize(version_base="1.3", config_path="../../conf"):
    full = compose(config_name="causal_lm", overrides=["out_dir=/tmp/unused", "+experiment=causal_lm_full"])
  assert set(full.algorithms) == set(C.ALGORITHMS) - {"q41"}
  assert [1, 1.5, 2, 2.5, 3] == list(full.bits)[:5]
  assert 576 % cfg.group_size == 0 and 1536 % cfg.group_size == 0


def test_budgets(cfg):
  for name in ("rtn", "gptq", "gptq_rot", "watersic", "e8_ldlq"):
    algo, budget = C.algorithm(name, 2, cfg)
    assert budget == 2 + 16 / 64
  assert C.algorithm("gptq_rot", 2, cfg)[0].rotation == "haar"
  assert C.algorithm("gptq", 2, cfg)[0].rotation is None
  assert C.algorithm("gptvq", 2.5, cfg)[1] == 2.625
  assert C.algorithm("q41", 4, cfg)[1] == 5.0
  e8, leech = C.algorithm("e8_ldlq", 2, cfg)[0], C.algorithm("leech_ldlq", 2, cfg)[0]
  assert e8.config.quantizer.startswith("e8_nested") and leech.config.quantizer.startswith("leech_nested")
  assert dataclasses.replace(leech.config, quantizer=e8.config.quantizer, block_size=128) == e8.config
  for n in (576, 1536):  # Λ24's lazy-update block divides both input widths (else 24-row steps)
    assert n % leech.config.block_size == 0
  from rdq.layer.lattice_sic import lattice_for_budget

  low = C.algorithm("leech_ldlq", C.MIN_BITS["leech_ldlq"], cfg)  # its smallest b has a code on every shape
  for n, m in ((576, 576), (576, 192), (576, 1536), (1536, 576)):
    assert lattice_for_budget(low[0].config, n, m, low[1]).quantizer.startswith("leech_nested_q2")
  with pytest.raises(ValueError, match="algorithm"):
    C.algorithm("awq", 2, cfg)
  with pytest.raises(ValueError, match="bits"):
    C.algorithm("rtn", 0.5, cfg)


def test_q41_grid_reproduces_the_reference_weights(cfg):
  """RTN on asymmetric min–max groups of 32 at 4 bits gives back the dequantized Q4_1 kernels."""
  from rdq.models.llama import _packaged

  params = _packaged().params
  assert C.algorithm("q41", 4, cfg) == (None, 5.0)
  for block, lin in (("layer0", "q"), ("layer11", "down"), ("layer29", "k")):
    w = params[block][lin]["kernel"]
    np.testing.assert_array_equal(C.q41_round_trip(w), w)
  # and it is a real quantizer: other weights move onto the grid, within half a step
  rng = np.random.default_rng(0)
  w = rng.normal(size=(64, 3)).astype(np.float32)
  w_hat = C.q41_round_trip(w)
  assert not np.array_equal(w_hat, w)
  step = (w.reshape(2, 32, 3).max(1) - w.reshape(2, 32, 3).min(1)) / 15
  assert np.all(np.abs(w_hat - w).reshape(2, 32, 3) <= 0.51 * step[:, None, :] + 1e-3)
  np.testing.assert_array_equal(C.q41_round_trip(w_hat), w_hat)


def test_distortion_and_closed_form_gap():
  rng = np.random.default_rng(0)
  w = rng.normal(size=(6, 4))
  w_hat = w + 0.1 * rng.normal(size=w.shape)
  a = rng.normal(size=(6, 6))
  h = a @ a.T
  e = w - w_hat
  assert C.distortion(w, w_hat, h) == pytest.approx(np.trace(e.T @ h @ e) / 24)
  # white H, variance s2: R*(d) = ½ log2(s2/d); at d = s2·2^{-2·1.5} the gap of a 2-bit code is 0.5
  s2 = float(np.mean(w**2))
  assert C.waterfill_gap(w, np.ones(6), 2.0, s2 * 2.0 ** -3) == pytest.approx(0.5, abs=1e-4)


def _rec(a, b, ppl, gap):
  p = {"ppl": ppl, "ppl_stderr": 0.1 * ppl}
  return {"config": {"algorithm": a, "bits": b}, "result": {
      "ppl_plays": p, "ppl_docstrings": p, "model_rate_bits": b + 0.25, "mean_gap_bits": gap,
      "heldout_over_cal_geomean": 1.5, "by_type": {t: {"gap_bits": gap, "heldout_over_cal": 1.5} for t in C.LAYER_TYPES}}}


def test_table_lists_reference_rows_and_rotation_comparison(cfg):
  info = {"reference_ppl_plays": {"ppl": 20.0, "ppl_stderr": 1.0}, "reference_ppl_docstrings": {"ppl": 30.0, "ppl_stderr": 2.0},
          "calibration_tokens": 2048, "calibration_plays": ["a"], "heldout_h_tokens": 1024, "eval_windows": 16,
          "window": 128, "eval_plays": ["hamlet"], "docstring_windows": 16}
  recs = [_rec("watersic", 2.0, 40.0, 0.3), _rec("gptq_rot", 2.0, 45.0, 0.45), _rec("rtn", 2.0, 900.0, 2.0)]
  t = C.table(recs, info, cfg)
  assert "| reference (Q4_1 dequantized, fp32) | — | 5.000 | 20.000 ± 1.000 |" in t
  assert t.index("| RTN |") < t.index("| GPTQ after Haar rotation |") < t.index("| WaterSIC | 2 |")
  assert "| 2 | GPTQ after Haar rotation − WaterSIC | +0.150 |" in t
  assert C.algorithm("gptq_rot_ec", 1, cfg)[0].rotation == "haar"
  assert C.algorithm("gptq_rot_ec", 1, cfg)[0].rate_kind == "entropy" and C.MIN_BITS["gptq_rot_ec"] == 1.0


def test_float32_distortions_match_float64():
  """The app's jitted float32 distortions agree with the float64 ones on a GPTQ-like error
  (concentrated on small-eigenvalue directions of an H with condition number 1e6)."""
  rng = np.random.default_rng(1)
  n, m = 96, 40
  q, _ = np.linalg.qr(rng.normal(size=(n, n)))
  lam = np.logspace(0, -6, n)
  h = (q * lam) @ q.T
  h = 0.5 * (h + h.T)
  w = rng.normal(size=(n, m))
  w_hat = w + 1e-2 * (q[:, -20:] @ rng.normal(size=(20, m))) + 1e-5 * rng.normal(size=(n, m))
  d_cal, d_held = (np.asarray(x)[0] for x in C._distortions(*(np.asarray(a, np.float32)[None] for a in (w, w_hat, h, 2 * h))))
  assert d_cal == pytest.approx(C.distortion(w, w_hat, h), rel=2e-4)
  assert d_held == pytest.approx(2 * C.distortion(w, w_hat, h), rel=2e-4)


def test_eigvalsh_and_background_gaps_match_float64():
  """SciPy float32 eigenvalues agree with NumPy float64 ones; the background ``_Gaps`` give the
  same gaps as ``waterfill_gap`` on float64 eigenvalues, shared H computed once."""
  rng = np.random.default_rng(2)
  x = rng.normal(size=(200, 48)) * np.logspace(0, -2, 48)
  h = x.T @ x / 200
  lam = np.linalg.eigvalsh(h)
  np.testing.assert_allclose(C.eigvalsh(h), lam, rtol=0, atol=1e-6 * lam.max())
  ws = [rng.normal(size=(48, 5)) for _ in range(3)]
  gaps = C._Gaps()
  calls = []
  orig = C.eigvalsh
  C.eigvalsh = lambda a: (calls.append(1), orig(a))[1]
  try:
    for i, w in enumerate(ws):
      gaps.submit(f"l{i}", w, h, 2.25, 1e-3 * (i + 1))
    got = gaps.results()
  finally:
    C.eigvalsh = orig
  assert len(calls) == 1  # one H, one eigendecomposition
  for i, w in enumerate(ws):
    assert got[f"l{i}"] == pytest.approx(C.waterfill_gap(w, lam, 2.25, 1e-3 * (i + 1)), abs=2e-4)
  bad = C._Gaps()
  bad.submit("x", ws[0], np.full((48, 48), np.nan), 2.0, 1e-3)
  with pytest.raises(ValueError):
    bad.results()


def test_points_are_deterministic(cfg):
  """Same config, same numbers: two runs of a point agree bitwise (tiny random llama, so it is
  fast; the eigenvalues run in a background thread), and different rates differ."""
  from types import SimpleNamespace

  from rdq.models import llama as L

  from ..models.test_llama import TINY, tiny_params

  rng = np.random.default_rng(4)
  ids = lambda w: rng.integers(0, TINY.vocab_size, size=(w, 8)).astype(np.int32)  # noqa: E731
  ctx = SimpleNamespace(model=L._from_weights(TINY, tiny_params(5)), calibration=ids(6), heldout=ids(2),
                        eval=ids(3), docs=ids(3), batch=2)
  points = [C._point(cfg, "rtn_ec", b) for b in (2.0, 3.0, 2.0)]
  a, b, again = (C._compute(p, ctx) for p in points)
  for k in ("layers", "ppl_plays", "ppl_docstrings", "mean_gap_bits", "by_type"):
    assert a[k] == again[k], k
  assert all(v["gap_bits"] is not None for v in a["layers"].values())
  assert a["layers"] != b["layers"]


def test_q41_check_skips_the_pass_only_when_every_kernel_is_on_the_grid(cfg, monkeypatch):
  """On a model already on the Q4_1 grid the check's shortcut stores exactly what the sequential
  pass stores (zero distortions, no gaps, the same perplexities); one kernel off the grid sends
  the point through the pass, which then measures a nonzero distortion."""
  from types import SimpleNamespace

  import jax
  from flax import nnx

  from rdq.models import linear_kernels, perplexity, replace_linears
  from rdq.models import llama as L

  config = L.LlamaConfig(vocab_size=40, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2,
                         intermediate_size=64, rope_theta=500.0, rms_eps=1e-5, context_length=16)  # n % 32 == 0
  rng = np.random.default_rng(7)
  state = nnx.state(nnx.eval_shape(lambda: L.Llama(config, rngs=nnx.Rngs(0))))
  pure = nnx.to_pure_dict(state) if hasattr(nnx, "to_pure_dict") else state.to_pure_dict()
  params = jax.tree.map(lambda a: np.asarray(rng.normal(size=a.shape) * 0.3 + (a.ndim == 1), np.float32), pure)
  raw = L._from_weights(config, params)
  on_grid = replace_linears(raw, {k: C.q41_round_trip(np.asarray(w)) for k, w in linear_kernels(raw).items()})
  ids = lambda w: rng.integers(0, config.vocab_size, size=(w, 8)).astype(np.int32)  # noqa: E731
  ctx = SimpleNamespace(model=on_grid, calibration=ids(6), heldout=ids(2), eval=ids(3), docs=ids(3), batch=2)
  point = C._point(cfg, "q41", 4.0)
  strip = lambda r: {k: v for k, v in r.items() if k != "quantize_s"}  # noqa: E731

  short = C._compute(point, ctx)
  monkeypatch.setattr(C, "_q41_exact", lambda *a: None)
  full = C._compute(point, ctx)
  assert strip(short) == strip(full)
  assert all(v["d_cal"] == 0.0 and v["d_heldout"] == 0.0 for v in short["layers"].values())
  assert short["ppl_plays"] == perplexity(on_grid, ctx.eval, ctx.batch).as_dict()

  monkeypatch.undo()
  off = C._compute(point, SimpleNamespace(**{**vars(ctx), "model": raw}))
  assert all(v["d_cal"] > 0 for v in off["layers"].values())


def tiny_context(cfg, reference=True):
  """A ``Context`` of the tiny random llama (module-level: a spawned worker process imports it)."""
  from types import SimpleNamespace

  from rdq.models import llama as L

  from ..models.test_llama import TINY, tiny_params

  rng = np.random.default_rng(4)
  ids = lambda w: rng.integers(0, TINY.vocab_size, size=(w, 8)).astype(np.int32)  # noqa: E731
  return SimpleNamespace(model=L._from_weights(TINY, tiny_params(5)), calibration=ids(6), heldout=ids(2),
                         eval=ids(3), docs=ids(3), batch=2, info=None)


@pytest.mark.skipif(C.num_workers(2, 2) < 2, reason="one CPU: workers=2 runs as workers=1, nothing to compare")
def test_workers_store_the_serial_results_bitwise(cfg, tmp_path, monkeypatch):
  """``workers=2`` (a spawned process computes one of the two points) stores bitwise the results
  of ``workers=1`` (every point in this process), on the tiny random llama."""
  import json
  import time

  from omegaconf import OmegaConf

  monkeypatch.setattr(C, "outputs", lambda cfg, records, out_dir: {})  # the real one builds the SmolLM2 context
  # rtn_ec (one program for every rate) as in test_points_are_deterministic: this process has compiled it
  base = OmegaConf.merge(cfg, {"algorithms": ["rtn_ec"], "bits": [2, 3], "q41_check": False})
  serial = OmegaConf.merge(base, {"out_dir": str(tmp_path / "w1"), "workers": 1})
  C.run(serial, make_context=tiny_context)

  compute, here = C._compute, []

  def compute_after_a_worker_point(point, ctx):  # this process waits until the worker has stored a point
    here.append(point["bits"])
    t0 = time.monotonic()
    while len(list((tmp_path / "w2" / "points").glob("*.json"))) < len(here) and time.monotonic() - t0 < 120:
      time.sleep(0.05)
    return compute(point, ctx)

  monkeypatch.setattr(C, "_compute", compute_after_a_worker_point)
  C.run(OmegaConf.merge(base, {"out_dir": str(tmp_path / "w2"), "workers": 2}), make_context=tiny_context)
  assert here == [2.0]  # the worker computed the other point

  def results(d):
    recs = json.loads((tmp_path / d / "results.json").read_text())["points"]
    return [(r["key"], {k: v for k, v in r["result"].items() if k not in ("wall_time_s", "finished_at", "quantize_s")})
            for r in recs]

  one, two = results("w1"), results("w2")
  assert [k for k, _ in one] == [k for k, _ in two] and len(one) == 2
  assert one == two
  assert one[0][1]["ppl_plays"] != one[1][1]["ppl_plays"]  # the rates differ, so do the perplexities


def test_num_workers_is_capped_and_checked():
  assert C.num_workers(1, 7) == 1 and C.num_workers(2, 1) == 1 and C.num_workers(2, 0) == 1
  assert 1 <= C.num_workers(64, 7) <= min(7, len(__import__("os").sched_getaffinity(0)))
  with pytest.raises(ValueError, match="workers"):
    C.num_workers(0, 3)
