"""Pallas kernels for ``y = x · dequant(W_q)`` (INT, W8A8, MXFP4/NVFP4, codebook, E8 lattice).

``kernels`` imports ``rdq`` (for the quantizers' code formats and the pure-JAX
references in ``rdq.quantized_matmul``); ``rdq`` never imports ``kernels``.
"""

from kernels._common import Config as Config
from kernels._common import choose_blocks as choose_blocks
from kernels._common import resolve_blocks as resolve_blocks
from kernels.codebook_matmul import codebook_matmul as codebook_matmul
from kernels.e8_matmul import e8_matmul as e8_matmul
from kernels.fp4_matmul import fp4_matmul as fp4_matmul
from kernels.int_matmul import int_matmul as int_matmul
from kernels.pack import PackedCodebook as PackedCodebook
from kernels.pack import PackedE8 as PackedE8
from kernels.pack import PackedFP4 as PackedFP4
from kernels.pack import PackedInt as PackedInt
from kernels.pack import bytes_of as bytes_of
from kernels.pack import pack_codebook as pack_codebook
from kernels.pack import pack_e8 as pack_e8
from kernels.pack import pack_fp4 as pack_fp4
from kernels.pack import pack_int as pack_int
from kernels.pack import pack_int_zero_point as pack_int_zero_point
from kernels.w8a8_matmul import pack_activations as pack_activations
from kernels.w8a8_matmul import w8a8_matmul as w8a8_matmul

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
