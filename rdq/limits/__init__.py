"""Information-theoretic limits and high-rate approximations (closed forms)."""

from rdq.limits.ecsq import ECSQ_GAP as ECSQ_GAP
from rdq.limits.ecsq import ECSQ_GAP_BITS as ECSQ_GAP_BITS
from rdq.limits.ecsq import ecsq_distortion as ecsq_distortion
from rdq.limits.gaussian import gaussian_rate as gaussian_rate
from rdq.limits.gaussian import gaussian_rd as gaussian_rd
from rdq.limits.generic_matmul import critical_rate as critical_rate
from rdq.limits.generic_matmul import generic_matmul as generic_matmul
from rdq.limits.generic_matmul import generic_matmul_rate as generic_matmul_rate
from rdq.limits.generic_matmul import naive_matmul_distortion as naive_matmul_distortion
from rdq.limits.lattice_constants import G_SPHERE_LIMIT as G_SPHERE_LIMIT
from rdq.limits.lattice_constants import PUBLISHED_G as PUBLISHED_G
from rdq.limits.lattice_constants import g_dn as g_dn
from rdq.limits.lattice_constants import g_sphere as g_sphere
from rdq.limits.lattice_constants import rate_gap_bits as rate_gap_bits
from rdq.limits.universal import UNIVERSALITY_GAP_BITS as UNIVERSALITY_GAP_BITS
from rdq.limits.universal import random_coding_rate as random_coding_rate
from rdq.limits.universal import universal_distortion as universal_distortion
from rdq.limits.universal import universal_gap as universal_gap
from rdq.limits.universal import universal_rate as universal_rate
from rdq.limits.waterfill import WaterfillResult as WaterfillResult
from rdq.limits.waterfill import waterfill as waterfill
from rdq.limits.waterfill import waterfill_gap_bits as waterfill_gap_bits
from rdq.limits.waterfill import waterfill_high_rate as waterfill_high_rate
from rdq.limits.waterfill import waterfill_rate as waterfill_rate

__all__ = [
    "ECSQ_GAP",
    "ECSQ_GAP_BITS",
    "ecsq_distortion",
    "G_SPHERE_LIMIT",
    "PUBLISHED_G",
    "UNIVERSALITY_GAP_BITS",
    "WaterfillResult",
    "critical_rate",
    "g_dn",
    "g_sphere",
    "gaussian_rate",
    "gaussian_rd",
    "generic_matmul",
    "generic_matmul_rate",
    "naive_matmul_distortion",
    "random_coding_rate",
    "rate_gap_bits",
    "universal_distortion",
    "universal_gap",
    "universal_rate",
    "waterfill",
    "waterfill_gap_bits",
    "waterfill_high_rate",
    "waterfill_rate",
]
