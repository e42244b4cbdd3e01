"""Weight-only layer quantization with known input statistics: RTN, GPTQ, WaterSIC, GPTVQ, lattice SIC.

Every algorithm maps ``(W, H, config, key) -> (Ŵ, LayerReport)`` with ``W`` of shape
``(n, m) = (in_features, out_features)`` and ``H = Σ_X = E[x xᵀ]`` of shape ``(n, n)``.
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
from rdq.layer.gptvq import GPTVQReport as GPTVQReport
from rdq.layer.gptvq import VQBits as VQBits
from rdq.layer.gptvq import gptvq as gptvq
from rdq.layer.gptvq import gptvq_bits as gptvq_bits
from rdq.layer.gptvq import vq_decode as vq_decode
from rdq.layer.lattice_sic import LatticeSICConfig as LatticeSICConfig
from rdq.layer.lattice_sic import lattice_sic as lattice_sic
from rdq.layer.lattice_sic import lattice_sic_traced as lattice_sic_traced
from rdq.layer.report import LayerReport as LayerReport
from rdq.layer.report import layer_distortion as layer_distortion
from rdq.layer.rtn import RTNConfig as RTNConfig
from rdq.layer.rtn import rtn as rtn
from rdq.layer.rtn import rtn_traced as rtn_traced
from rdq.layer.watersic import WaterSICConfig as WaterSICConfig
from rdq.layer.watersic import watersic as watersic
from rdq.layer.watersic import watersic_traced as watersic_traced

__all__ = [
    "GPTQConfig",
    "GPTVQConfig",
    "GPTVQReport",
    "GPTVQ_STAGES",
    "LatticeSICConfig",
    "LayerReport",
    "MinMaxGrid",
    "RTNConfig",
    "StepGrid",
    "UniformGrid",
    "VQBits",
    "WaterSICConfig",
    "damp_hessian",
    "gptq",
    "gptq_traced",
    "gptvq",
    "gptvq_bits",
    "high_rate_step",
    "inverse_cholesky_upper",
    "lattice_sic",
    "lattice_sic_traced",
    "layer_distortion",
    "rtn",
    "rtn_traced",
    "sic",
    "vq_decode",
    "watersic",
    "watersic_traced",
]
