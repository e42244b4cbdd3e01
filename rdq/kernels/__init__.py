"""Pallas kernels for ``y = x · dequant(W_q)`` (INT, W8A8, MXFP4/NVFP4, codebook, E8 lattice).

``kernels`` imports ``rdq`` (for the quantizers' code formats and the pure-JAX
references in ``rdq.quantized_matmul``); ``rdq`` never imports ``kernels``.
"""

from rdq.kernels._common import Config as Config
from rdq.kernels._common import choose_blocks as choose_blocks
from rdq.kernels._common import resolve_blocks as resolve_blocks
from rdq.kernels.codebook_matmul import codebook_matmul as codebook_matmul
from rdq.kernels.e8_matmul import e8_matmul as e8_matmul
from rdq.kernels.fp4_matmul import fp4_matmul as fp4_matmul
from rdq.kernels.int_matmul import int_matmul as int_matmul
from rdq.kernels.pack import PackedCodebook as PackedCodebook
from rdq.kernels.pack import PackedE8 as PackedE8
from rdq.kernels.pack import PackedFP4 as PackedFP4
from rdq.kernels.pack import PackedInt as PackedInt
from rdq.kernels.pack import bytes_of as bytes_of
from rdq.kernels.pack import pack_codebook as pack_codebook
from rdq.kernels.pack import pack_e8 as pack_e8
from rdq.kernels.pack import pack_fp4 as pack_fp4
from rdq.kernels.pack import pack_int as pack_int
from rdq.kernels.pack import pack_int_zero_point as pack_int_zero_point
from rdq.kernels.w8a8_matmul import pack_activations as pack_activations
from rdq.kernels.w8a8_matmul import w8a8_matmul as w8a8_matmul

__all__ = [
    "Config",
    "PackedCodebook",
    "PackedE8",
    "PackedFP4",
    "PackedInt",
    "bytes_of",
    "choose_blocks",
    "codebook_matmul",
    "e8_matmul",
    "fp4_matmul",
    "int_matmul",
    "pack_activations",
    "pack_codebook",
    "pack_e8",
    "pack_fp4",
    "pack_int",
    "pack_int_zero_point",
    "resolve_blocks",
    "w8a8_matmul",
]
