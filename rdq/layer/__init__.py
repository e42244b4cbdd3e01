"""Weight-only layer quantization with known input statistics: RTN, GPTQ, WaterSIC, GPTVQ, lattice SIC.

One door (``rdq.layer.registry``): ``algo = rdq.layer.get(name, **options)`` is a frozen,
hashable ``LayerAlgorithm``; ``algo(w, h, *, key, rate_bits) -> (Ŵ, LayerReport)`` with ``W``
of shape ``(n, m) = (in_features, out_features)`` and ``H = Σ_X = E[x xᵀ]`` of shape
``(n, n)``, jit-able and vmappable; ``rdq.layer.names()`` lists the algorithms. The per-algorithm
functions (``gptq(w, h, config)``, …) are the same entry point with a config object; the
``*_traced`` cores (one signature: ``(w, h, config, key=None, *, rate_bits=None)``) skip the checks and
the scale normalization.
"""

from rdq.layer._sic import MinMaxGrid as MinMaxGrid
from rdq.layer._sic import StepGrid as StepGrid
from rdq.layer._sic import UniformGrid as UniformGrid
from rdq.layer._sic import damp_hessian as damp_hessian
from rdq.layer._sic import high_rate_step as high_rate_step
from rdq.layer._sic import inverse_cholesky_upper as inverse_cholesky_upper
from rdq.layer._sic import sic as sic
from rdq.layer.gptq import GPTQConfig as GPTQConfig
from rdq.layer.gptq import gptq as gptq
from rdq.layer.gptq import gptq_traced as gptq_traced
from rdq.layer.gptvq import STAGES as GPTVQ_STAGES
from rdq.layer.gptvq import GPTVQConfig as GPTVQConfig
from rdq.layer.gptvq import VQBits as VQBits
from rdq.layer.gptvq import gptvq as gptvq
from rdq.layer.gptvq import gptvq_bits as gptvq_bits
from rdq.layer.gptvq import gptvq_for_budget as gptvq_for_budget
from rdq.layer.gptvq import gptvq_tiles as gptvq_tiles
from rdq.layer.gptvq import gptvq_traced as gptvq_traced
from rdq.layer.gptvq import vq_decode as vq_decode
from rdq.layer.lattice_sic import LatticeSICConfig as LatticeSICConfig
from rdq.layer.lattice_sic import lattice_for_budget as lattice_for_budget
from rdq.layer.lattice_sic import lattice_sic as lattice_sic
from rdq.layer.lattice_sic import lattice_sic_traced as lattice_sic_traced
from rdq.layer.registry import LayerAlgorithm as LayerAlgorithm
from rdq.layer.registry import LayerSpec as LayerSpec
from rdq.layer.registry import get as get
from rdq.layer.registry import names as names
from rdq.layer.registry import register as register
from rdq.layer.report import LayerReport as LayerReport
from rdq.layer.report import layer_distortion as layer_distortion
from rdq.layer.rtn import RTNConfig as RTNConfig
from rdq.layer.rtn import rtn as rtn
from rdq.layer.rtn import rtn_traced as rtn_traced
from rdq.layer.watersic import WaterSICConfig as WaterSICConfig
from rdq.layer.watersic import max_rate_bits as watersic_max_rate_bits
from rdq.layer.watersic import watersic as watersic
from rdq.layer.watersic import watersic_traced as watersic_traced

__all__ = [
    "GPTQConfig",
    "GPTVQConfig",
    "GPTVQ_STAGES",
    "LatticeSICConfig",
    "LayerAlgorithm",
    "LayerSpec",
    "LayerReport",
    "MinMaxGrid",
    "RTNConfig",
    "StepGrid",
    "UniformGrid",
    "VQBits",
    "WaterSICConfig",
    "damp_hessian",
    "get",
    "gptq",
    "gptq_traced",
    "gptvq",
    "gptvq_bits",
    "gptvq_for_budget",
    "gptvq_tiles",
    "gptvq_traced",
    "high_rate_step",
    "inverse_cholesky_upper",
    "lattice_for_budget",
    "lattice_sic",
    "lattice_sic_traced",
    "layer_distortion",
    "names",
    "register",
    "rtn",
    "rtn_traced",
    "sic",
    "vq_decode",
    "watersic",
    "watersic_max_rate_bits",
    "watersic_traced",
]
