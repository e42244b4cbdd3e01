"""The jaxtyping shape annotations of rdq's public functions hold at run time.

rdq is imported under jaxtyping's import hook with beartype as the checker (in a fresh
interpreter, so the hook sees every module's first import), and the main entry points of each
package are called with valid inputs: any annotation that disagrees with what the code accepts or
returns (a dtype, a shape symbol used inconsistently, a wrong rank) raises ``TypeCheckError``.
beartype's PEP 484 numeric tower is on: an ``int`` is accepted where ``float`` is annotated.
"""

import os
import subprocess
import sys
import textwrap

_SCRIPT = textwrap.dedent(
    """
    from jaxtyping import install_import_hook

    with install_import_hook(["rdq"], "beartype.beartype(conf=beartype.BeartypeConf(is_pep484_tower=True))"):
        import rdq.covariance as C
        import rdq.layer as LA
        import rdq.limits as L
        import rdq.matmul_mc as M
        import rdq.montecarlo as MC
        import rdq.quantizers as Q
        import rdq.rate as R
    import jax
    import jax.numpy as jnp

    fails = []

    def run(name, f):
        try:
            f()
        except Exception as e:  # noqa: BLE001  (report every failure, not just the first)
            fails.append(f"{name}: {type(e).__name__}: {str(e)[:400]}")

    k = jax.random.key(0)
    x = jax.random.normal(k, (4, 256))
    run("gaussian_rd", lambda: L.gaussian_rd(2.0))
    run("gaussian_rate", lambda: L.gaussian_rate(0.1))
    run("generic_matmul", lambda: L.generic_matmul(2.0))
    run("generic_matmul_rate", lambda: L.generic_matmul_rate(0.1))
    lam = jnp.array([4.0, 1.0, 0.5, 0.1])
    run("waterfill", lambda: L.waterfill(lam, 1.0))
    run("waterfill_rate", lambda: L.waterfill_rate(lam, 0.1))
    run("waterfill_gap_bits", lambda: L.waterfill_gap_bits(lam, 1.5, 0.1))
    for n in ["int8_row", "int4_block32", "mxfp4", "nvfp4", "e4m3", "e8_nested_q8", "vq2_b3_g256_int8"]:
        q = Q.get(n)
        run(f"{n}.quantize", lambda q=q: q.quantize(x, key=k))
        run(f"{n}.rate", lambda q=q: q.rate((4, 256)))
        run(f"{n}.decode(encode)", lambda q=q: q.decode(q.encode(x, key=k)) if n.startswith("vq") else q.decode(q.encode(x)))
    w = jax.random.normal(k, (64, 32))
    xx = jax.random.normal(jax.random.key(1), (256, 64))
    h = xx.T @ xx / 256
    for name in LA.names():
        run(f"layer {name}", lambda name=name: LA.get(name)(w, h, key=k, rate_bits=3.0))
    run("layer_distortion", lambda: LA.layer_distortion(w, w, h))
    run("AR1", lambda: C.AR1(16)(k, 0.5))
    run("empirical_entropy_bits", lambda: R.empirical_entropy_bits(jnp.zeros((4, 8), jnp.int32), axis=1))
    run("matmul_distortion", lambda: M.matmul_distortion(Q.get("int8_row"), Q.get("int8_row"), M.MatmulSetup(n=64, a=4, b=4), k, 64))
    run("estimate", lambda: MC.estimate(lambda kk: jax.random.normal(kk) ** 2, k, 256))
    cb = Q.gaussian_codebook(k, 4, 2.0)
    run("rate_gap", lambda: Q.rate_gap(cb, jnp.eye(4)[None], k, num_samples=16, num_select=8))
    print("\\n".join(fails) or "ALL-ANNOTATIONS-HOLD")
    """
)


# The annotations are checked in Python, when a function is called (under jit: while it is traced);
# the compiled code's speed does not matter here, so XLA skips its expensive optimization passes
# (most of this test's time is compiling the layer algorithms).
_FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


def test_annotations_hold_at_run_time():
  env = dict(os.environ, XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") + " " + _FAST_COMPILE).strip())
  out = subprocess.run([sys.executable, "-W", "ignore", "-c", _SCRIPT], capture_output=True, text=True, timeout=600, env=env)
  assert out.returncode == 0, out.stderr[-3000:]
  assert out.stdout.strip().endswith("ALL-ANNOTATIONS-HOLD"), out.stdout[-4000:]
