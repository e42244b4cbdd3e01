"""Quantizers: absmax INT, FP (elementwise, MX, NV), lattices and nested-lattice codes, VQ, and the name registry."""

from rdq.quantizers import _register_lattice as _register_lattice  # registers nested-lattice names
from rdq.quantizers import _register_scalar as _register_scalar  # registers INT/FP names
from rdq.quantizers import _register_vq as _register_vq  # registers VQ names
from rdq.quantizers.base import Quantizer as Quantizer
from rdq.quantizers.base import Rate as Rate
from rdq.quantizers.fp import FORMATS as FORMATS
from rdq.quantizers.fp import FPCode as FPCode
from rdq.quantizers.fp import FPFormat as FPFormat
from rdq.quantizers.fp import FPQuantizer as FPQuantizer
from rdq.quantizers.fp import round_to_format as round_to_format
from rdq.quantizers.integer import IntCode as IntCode
from rdq.quantizers.integer import IntQuantizer as IntQuantizer
from rdq.quantizers.lattice import DnDualLattice as DnDualLattice
from rdq.quantizers.lattice import DnLattice as DnLattice
from rdq.quantizers.lattice import E8Lattice as E8Lattice
from rdq.quantizers.lattice import Lattice as Lattice
from rdq.quantizers.lattice import ZnLattice as ZnLattice
from rdq.quantizers.lattice import lattice_from_name as lattice_from_name
from rdq.quantizers.lattice import normalized_second_moment as normalized_second_moment
from rdq.quantizers.nested import NestedCode as NestedCode
from rdq.quantizers.nested import NestedLatticeQuantizer as NestedLatticeQuantizer
from rdq.quantizers.nested import VoronoiCode as VoronoiCode
from rdq.quantizers.nested import nested_dot as nested_dot
from rdq.quantizers.nested import search_betas as search_betas
from rdq.quantizers.registry import get as get
from rdq.quantizers.registry import names as names
from rdq.quantizers.registry import register as register
from rdq.quantizers.universal import Codebook as Codebook
from rdq.quantizers.universal import LearnConfig as LearnConfig
from rdq.quantizers.universal import ProductCodebook as ProductCodebook
from rdq.quantizers.universal import gaussian_codebook as gaussian_codebook
from rdq.quantizers.universal import lattice_codebook as lattice_codebook
from rdq.quantizers.universal import learn_minimax_codebook as learn_minimax_codebook
from rdq.quantizers.universal import leech_codebook as leech_codebook
from rdq.quantizers.universal import rate_gap as rate_gap
from rdq.quantizers.universal import sphere_codebook as sphere_codebook
from rdq.quantizers.vq import KMeansResult as KMeansResult
from rdq.quantizers.vq import VQCode as VQCode
from rdq.quantizers.vq import VQQuantizer as VQQuantizer
from rdq.quantizers.vq import kmeanspp_init as kmeanspp_init
from rdq.quantizers.vq import quantize_codebook_int8 as quantize_codebook_int8
from rdq.quantizers.vq import weighted_kmeans as weighted_kmeans

__all__ = [
    "Codebook",
    "DnDualLattice",
    "DnLattice",
    "E8Lattice",
    "FORMATS",
    "FPCode",
    "FPFormat",
    "FPQuantizer",
    "IntCode",
    "IntQuantizer",
    "LearnConfig",
    "KMeansResult",
    "Lattice",
    "NestedCode",
    "NestedLatticeQuantizer",
    "ProductCodebook",
    "Quantizer",
    "Rate",
    "VQCode",
    "VQQuantizer",
    "VoronoiCode",
    "ZnLattice",
    "gaussian_codebook",
    "get",
    "lattice_codebook",
    "leech_codebook",
    "learn_minimax_codebook",
    "kmeanspp_init",
    "lattice_from_name",
    "names",
    "nested_dot",
    "normalized_second_moment",
    "quantize_codebook_int8",
    "rate_gap",
    "register",
    "round_to_format",
    "search_betas",
    "sphere_codebook",
    "weighted_kmeans",
]
