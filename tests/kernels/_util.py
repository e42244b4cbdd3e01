"""Shared helpers of the kernel tests: tolerances, cross-lowering, MC comparison."""

from __future__ import annotations

import dataclasses
import os
import statistics
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rdq.quantizers.base import Rate

BACKENDS = ("tpu", "gpu")

# RDQ_KERNEL_TESTS=compiled runs the kernel tests compiled on the local accelerator instead of
# in the Pallas interpreter (cases for the other backend's memory model are then skipped).
COMPILED = os.environ.get("RDQ_KERNEL_TESTS", "interpret") == "compiled"


def mode(backend: str) -> dict:
  """``backend``/``interpret`` keyword arguments of a kernel call in the selected test mode."""
  if not COMPILED:
    return dict(backend=backend, interpret=True)
  platform = jax.default_backend()
  native = "gpu" if platform in ("gpu", "cuda", "rocm") else platform
  if native != backend:
    pytest.skip(reason=f"compiled mode on {platform}: the {backend} memory model needs that device")
  return dict(backend=backend, interpret=False)


def tolerance(out_dtype, k: int, x, w_hat_kn, *, scale_after: bool = False) -> np.ndarray:
  """Elementwise bound on |kernel − reference| when both use the same dequantized Ŵ.

  They differ only by fp32 summation order: ≤ c·eps32·√K·(|x|·|Ŵ|) (a random-walk bound
  with margin c = 8), plus one rounding of the output when it is stored below fp32
  (bf16: eps_bf16 · |y|).

  ``scale_after``: the kernel applies the group scale after the partial dot,
  ``y = Σ_g s_g · fl(Σ_{k∈g} x_k q_k)``, from the exact integer/E2M1 codes, while the
  reference multiplies by ``ŵ_k = rd_x(fl32(q_k s_k))`` (decoded in fp32, then rounded to
  ``x.dtype``). Per term ``|ŵ_k − q_k s_k| ≤ (u_x + u32 + u_x u32)|q_k s_k|`` (unit
  roundoffs u = eps/2 of ``x.dtype`` and fp32; with two scales, e.g. NVFP4's block and
  tensor scale or E8's β and RMS scale, the decode rounds twice: ``u_x + 2·u32 + …``), and
  the kernel's ≤ 2 scale multiplications add ≤ 2·u32·Σ|x||q s|; so the bound gains
  ``(u_x + 4·u32)(1 + u_x)·(|x|·|Ŵ|)`` (first order; |Ŵ| before the cast), on top of each
  side's own fp32 summation error and output rounding above. Derived, not fitted: no
  margin is added to this term.
  """
  xa = np.abs(np.asarray(x, np.float64))
  wa = np.abs(np.asarray(jnp.asarray(w_hat_kn, jnp.float32).astype(x.dtype), np.float64))
  acc = 8.0 * float(jnp.finfo(jnp.float32).eps) * np.sqrt(k) * (xa @ wa)
  if jnp.dtype(out_dtype) != jnp.dtype(jnp.float32):
    acc = acc + float(jnp.finfo(out_dtype).eps) * (xa @ wa)
  if scale_after:
    u_x = float(jnp.finfo(x.dtype).eps) / 2
    u32 = float(jnp.finfo(jnp.float32).eps) / 2
    w32 = np.abs(np.asarray(w_hat_kn, np.float64))
    acc = acc + (u_x + 4 * u32) * (1 + u_x) * (xa @ w32)
  return acc + 1e-30


def assert_close(y, ref, tol):
  y = np.asarray(jnp.asarray(y, jnp.float32), np.float64)
  ref = np.asarray(jnp.asarray(ref, jnp.float32), np.float64)
  assert y.shape == ref.shape
  err = np.abs(y - ref)
  bad = err > tol
  assert not bad.any(), f"{bad.sum()} entries outside tolerance; max err {err.max():.3g}, at tol {tol[bad].min():.3g}"


def lower(fn, args, backend: str):
  """Cross-lower ``jax.jit(fn)`` for ``backend`` on this CPU-only machine.

  TPU: ``lowering_platforms=("tpu",)`` runs the Pallas→Mosaic lowering. GPU: Triton
  lowering needs a device description, given as an abstract H100 (no GPU is touched).
  """
  traced = jax.jit(fn).trace(*args)
  if backend == "tpu":
    return traced.lower(lowering_platforms=("tpu",))
  try:
    abstract = jax.sharding.AbstractDevice(device_kind="NVIDIA H100 80GB HBM3", num_cores=None,
                                           platform="cuda")
  except (AttributeError, TypeError) as e:  # older/newer jax without abstract devices
    pytest.skip(reason=f"this jax ({jax.__version__}) cannot describe an abstract GPU: {e}")
  mesh = jax.sharding.AbstractMesh((1,), ("x",), abstract_device=abstract)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # "Triton backend is deprecated"
    with jax.sharding.use_abstract_mesh(mesh):
      return jax.jit(fn).trace(*args).lower(lowering_platforms=("cuda",))


def assert_lowered(lowered, backend: str):
  text = lowered.as_text()
  marker = "tpu_custom_call" if backend == "tpu" else "__gpu$xla.gpu.triton"
  assert marker in text, f"no {backend} kernel call in the lowered module"


@dataclasses.dataclass(frozen=True)
class Identity:
  """The identity 'quantizer' (unquantized fp32 factor), for weight-only MC predictions."""

  def quantize(self, x, key=None):
    return x

  def rate(self, shape):
    return Rate(nominal=32.0, side=0.0)


def mc_agrees(kernel_errors, est, level: float = 0.99):
  """Whether the kernel's mean error and rdq's MC estimate agree within a two-sample CI.

  Returns ``(ok, message)``: the difference of the two means must lie within
  ``z·sqrt(se_kernel² + se_mc²)``.
  """
  e = np.asarray(kernel_errors, np.float64)
  mean_k = e.mean()
  se_k = e.std(ddof=1) / np.sqrt(e.size)
  z = statistics.NormalDist().inv_cdf(0.5 + level / 2)
  diff = mean_k - float(est.mean)
  half = z * np.sqrt(se_k**2 + float(est.stderr) ** 2)
  return abs(diff) <= half, (
      f"kernel mean {mean_k:.5g} ± {se_k:.2g} (n={e.size}) vs rdq MC {float(est.mean):.5g} ± "
      f"{float(est.stderr):.2g} (n={est.n}); |diff| {abs(diff):.3g} vs {level:.0%} half-width {half:.3g}"
  )


def product_error(x, w, y) -> float:
  """‖x·W − y‖²_F / (K·M·N), the generic-matmul normalization (n = K inner dimension)."""
  exact = np.asarray(x, np.float64) @ np.asarray(w, np.float64)
  m, k = x.shape
  return float(np.sum((exact - np.asarray(y, np.float64)) ** 2) / (k * m * w.shape[1]))
