"""Registry entries for the scalar INT and FP families."""

from __future__ import annotations

from rdq.quantizers.fp import FORMATS, FPQuantizer
from rdq.quantizers.integer import IntQuantizer
from rdq.quantizers.registry import register


def _int(m):
  bits = int(m["bits"])
  gran = m["gran"] or "tensor"
  block = None
  if gran.startswith("block"):
    block = int(gran[len("block"):])
    gran = "block"
  return IntQuantizer(bits=bits, granularity=gran, block_size=block, scale_format=m["scale"] or "fp32")


register(
    r"int(?P<bits>\d+)(?:_(?P<gran>tensor|row|block\d+))?(?:_(?P<scale>fp32|bf16|fp16|e8m0))?",
    _int,
    ("int8", "int8_row", "int6_row", "int4", "int4_row", "int4_block32", "int4_block128",
     "int3_block64", "int2_block64", "int4_block32_e8m0"),
    "int<b>[_tensor|_row|_block<g>][_fp32|_bf16|_fp16|_e8m0]: absmax INT, 2 ≤ b ≤ 8 (default per tensor, fp32 scale)",
)

_elems = "|".join(FORMATS)
register(
    rf"(?P<e>{_elems})",
    lambda m: FPQuantizer(m["e"]),
    tuple(FORMATS),
    f"{'|'.join(FORMATS)}: elementwise FP, round-to-nearest-even, saturating",
)
register(
    rf"(?P<e>{_elems})_block(?P<g>\d+)_(?P<s>e8m0|e4m3|bf16|fp16|fp32)",
    lambda m: FPQuantizer(m["e"], int(m["g"]), m["s"]),
    ("e4m3_block128_fp32",),
    "<elem>_block<g>_<scale>: FP elements with one scale per g entries",
)

_MX = {"mxfp4": "e2m1", "mxfp6_e2m3": "e2m3", "mxfp6_e3m2": "e3m2", "mxfp8_e4m3": "e4m3", "mxfp8_e5m2": "e5m2"}
register(
    r"(?P<mx>mxfp4|mxfp6_e2m3|mxfp6_e3m2|mxfp8_e4m3|mxfp8_e5m2)(?P<ceil>_ceil)?",
    lambda m: FPQuantizer(_MX[m["mx"]], 32, "e8m0", scale_rule="ceil" if m["ceil"] else "ocp"),
    tuple(_MX) + ("mxfp4_ceil", "mxfp8_e4m3_ceil"),
    "mxfp4|mxfp6_e2m3|mxfp6_e3m2|mxfp8_e4m3|mxfp8_e5m2[_ceil]: OCP MX v1.0, block 32, e8m0 scale (_ceil: jax's rounding)",
)
register(
    r"nvfp4",
    lambda m: FPQuantizer("e2m1", 16, "e4m3", tensor_scale=True),
    ("nvfp4",),
    "nvfp4: E2M1, block 16, E4M3 block scale, fp32 tensor scale",
)
