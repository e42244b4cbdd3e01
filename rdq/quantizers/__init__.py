"""Quantizers: absmax INT, FP (elementwise, MX, NV), and the name registry."""

from rdq.quantizers import _register_scalar as _register_scalar  # registers INT/FP names
from rdq.quantizers.base import Quantizer as Quantizer
from rdq.quantizers.base import Rate as Rate
from rdq.quantizers.fp import FORMATS as FORMATS
from rdq.quantizers.fp import FPCode as FPCode
from rdq.quantizers.fp import FPFormat as FPFormat
from rdq.quantizers.fp import FPQuantizer as FPQuantizer
from rdq.quantizers.fp import round_to_format as round_to_format
from rdq.quantizers.integer import IntCode as IntCode
from rdq.quantizers.integer import IntQuantizer as IntQuantizer
from rdq.quantizers.registry import get as get
from rdq.quantizers.registry import names as names
from rdq.quantizers.registry import register as register

__all__ = [
    "FORMATS",
    "FPCode",
    "FPFormat",
    "FPQuantizer",
    "IntCode",
    "IntQuantizer",
    "Quantizer",
    "Rate",
    "get",
    "names",
    "register",
    "round_to_format",
]
