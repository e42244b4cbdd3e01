"""Universal codebooks: one codebook for every Σ_X, with Σ-aware nearest-codeword encoding.

Setting (Harbuzova, Ordentlich & Polyanskiy 2026, notation of the paper). A weight vector
``w ∈ Rⁿ`` (one output feature's column of ``W ∈ R^{n×m}``, n input features) has iid
``N(0, 1)`` entries. A codebook ``C ⊂ Rⁿ`` of ``|C| = 2^{nR}`` points is fixed in advance,
without knowledge of the activation covariance ``Σ = Σ_X``. The encoder knows Σ and picks

.. math::
   \\hat c(w) = \\arg\\min_{c \\in C} (w - c)^\\top Σ (w - c), \\qquad
   D_C(Σ) = \\frac1n\\, \\mathbb{E}\\,(w - \\hat c)^\\top Σ (w - \\hat c).

The comparison is reverse waterfilling ``rdq.limits.waterfill`` on ``eig(Σ)``: the **rate gap**
of C at Σ is ``R − R_wf(D_C(Σ))``, the rate an X-adapted codebook would save at the same
distortion. The paper proves that *some* C has rate gap ``≤ 0.11`` bit for every Σ as
``n → ∞`` (non-constructively; its random-coding proof uses an isotropic Gaussian codebook with
an encoder-selected scale τ). ``rdq.limits.universal`` evaluates that asymptotic random-coding
gap; this module measures finite-n codebooks.

**Encoder-selected scale.** As in the paper, the encoder may also pick a scale τ for the whole
codebook per Σ (``encode(w, sigma, scale=τ)`` uses ``τ·C``). Σ is shared by the m output
features of a layer, so τ costs ``log2(#scales)/(n·m)`` bits per entry: it vanishes as m grows
and is not counted in ``rate``.

**Constructions** (each returns a frozen dataclass with ``points``, ``rate``, ``encode``):

* ``gaussian_codebook`` — iid ``N(0, c)`` codewords (the paper's random code);
* ``sphere_codebook`` — iid uniform on the sphere of the typical radius ``√(n c)``;
* ``lattice_codebook`` — the ``2^{nR}`` points of Zⁿ / Dₙ / E8 nearest to the origin (the
  innermost shells, the last shell cut at random), randomly rotated (Haar);
* ``leech_codebook`` — n = 24: the origin and the 196 560 minimal vectors of the Leech lattice
  Λ24 (R = log2(196 561)/24 ≈ 0.7305 bit), randomly rotated;
* ``ProductCodebook`` — a small block codebook repeated over ``n/d`` blocks of input features,
  the practical baseline (``2^{nR}`` points with only ``2^{dR}`` stored);
* ``learn_minimax_codebook`` — points optimised with optax to minimise a smooth maximum
  (log-sum-exp) of the rate gap over a training batch of Σ, with a soft (softmax-weighted)
  nearest-codeword assignment annealed towards the hard one.

Default codeword power: ``c = 1 − 2^{−2R}`` per coordinate, the reconstruction variance of the
Shannon test channel for ``N(0, 1)`` at rate R (the optimum at ``Σ = I``).

**Encoding** is exact: with ``u = Σw`` and ``q_c = cᵀΣc``, ``(w−c)ᵀΣ(w−c) = wᵀΣw + q_c − 2uᵀc``,
so the nearest codeword is ``argmin_c (q_c − 2uᵀc)``, computed over chunks of ``chunk``
codewords with a running minimum (``lax.scan``); the working memory is ``batch × chunk``
floats however large the codebook. Ties go to the lowest index. ``ProductCodebook`` encodes by
block successive interference cancellation (Babai's nearest plane on the Cholesky factor of Σ,
block by block, last block first): exact when Σ is block-diagonal over its blocks, otherwise the
practical (GPTVQ-like) heuristic; ``ProductCodebook.materialize()`` gives the exact joint search
where it fits in memory.

References:
  A. Harbuzova, O. Ordentlich, Y. Polyanskiy, "Price of (metric) universality in vector
  quantization is at most 0.11 bit", arXiv 2602.05790, COLT 2026 (PMLR 336:3143–3183), main
  theorem and its random-coding construction. Reverse waterfilling: Cover & Thomas, *Elements of
  Information Theory*, Thm. 10.3.3. Lattices and shells: Conway & Sloane, *SPLAG*, Ch. 4.
  Block SIC / nearest plane: L. Babai, "On Lovász' lattice reduction and the nearest lattice
  point problem", Combinatorica 6 (1986); van Baalen et al., "GPTVQ", arXiv 2402.15319.
"""


from rdq.quantizers.universal_codebook import DEFAULT_MAX_BYTES as DEFAULT_MAX_BYTES
from rdq.quantizers.universal_codebook import LEECH_SHELL_SIZES as LEECH_SHELL_SIZES
from rdq.quantizers.universal_codebook import Codebook as Codebook
from rdq.quantizers.universal_codebook import gaussian_codebook as gaussian_codebook
from rdq.quantizers.universal_codebook import lattice_codebook as lattice_codebook
from rdq.quantizers.universal_codebook import leech_codebook as leech_codebook
from rdq.quantizers.universal_codebook import shannon_power as shannon_power
from rdq.quantizers.universal_codebook import sphere_codebook as sphere_codebook
from rdq.quantizers.universal_gap import GapResult as GapResult
from rdq.quantizers.universal_gap import rate_gap as rate_gap
from rdq.quantizers.universal_learn import LearnConfig as LearnConfig
from rdq.quantizers.universal_learn import LearnHistory as LearnHistory
from rdq.quantizers.universal_learn import learn_minimax_codebook as learn_minimax_codebook
from rdq.quantizers.universal_product import ProductCodebook as ProductCodebook

__all__ = ["Codebook", "DEFAULT_MAX_BYTES", "GapResult", "LEECH_SHELL_SIZES", "LearnConfig", "LearnHistory", "ProductCodebook", "gaussian_codebook", "lattice_codebook", "learn_minimax_codebook", "leech_codebook", "rate_gap", "shannon_power", "sphere_codebook"]
