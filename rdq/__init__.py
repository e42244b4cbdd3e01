"""rdq: rate–distortion experiments on quantized matrix multiplication, in JAX."""

from rdq import covariance as covariance
from rdq import layer as layer
from rdq import limits as limits
from rdq import montecarlo as montecarlo
from rdq import quantizers as quantizers
from rdq import rate as rate
from rdq.matmul_mc import MatmulSetup as MatmulSetup
from rdq.matmul_mc import matmul_distortion as matmul_distortion
from rdq.montecarlo import Estimate as Estimate
from rdq.montecarlo import estimate as estimate

__version__ = "0.1.0"

__all__ = [
    "Estimate",
    "MatmulSetup",
    "covariance",
    "estimate",
    "layer",
    "limits",
    "matmul_distortion",
    "montecarlo",
    "quantizers",
    "rate",
]
