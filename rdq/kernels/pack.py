"""Weight layouts of the kernels, and ``pack_*`` functions from rdq's ``encode`` outputs.

rdq quantizers act on the **last axis**, so the reduction dimension of ``y = x·W`` must be
last when encoding: encode ``Wᵀ`` of shape ``(N, K)`` (N output features, K input
features); scales then run along K, one per group of ``g`` input features. The kernels
read W as ``(K, N)`` (rows = input features), so ``pack_*`` transposes, and packs:

* **int8**: ``int8 (K, N)``.
* **nibbles** (INT4 and E2M1, portable): ``uint8 (K, N/2)``; byte ``[k, j]`` holds output
  feature ``2j`` in its low nibble and ``2j+1`` in its high nibble. Unpacking is two
  shifts and an interleave along the minor axis (``jnp.stack(..., -1)`` + reshape, which
  Triton lowers to ``tl.join``). INT4 nibbles are two's complement (signed) or plain
  unsigned (with zero points); E2M1 nibbles are the OCP bit pattern ``s ee m``.
* **words** (INT4/INT8, pre-permuted, the default for 4-bit codes): ``uint32 (K/P, N)``
  with ``P = 32/b`` codes per word along **K**: bits ``b·j … b·j+b−1`` of word ``[i, n]``
  hold the code of input feature ``P·i + j``, output feature ``n``, in offset binary
  (``q + 2^(b−1)`` for signed codes, ``q`` for unsigned ones). A thread that loads a word
  holds ``P`` consecutive input features of one output feature, so unpacking needs no
  cross-lane shuffle or interleave, the partial dot over those ``P`` features is formed in
  registers and the group scale is applied once per word (``words_to_planes``).
* **int4** (TPU variant): ``jnp.int4 (K, N)``, which XLA:TPU stores packed two per byte.
* **scales**: ``(K/g, N)``; INT scales in their float storage dtype (``e8m0`` widened to
  fp32), FP4 scales as raw ``uint8`` bytes of their e8m0 / e4m3 encoding, decoded in the
  kernel with integer ops (portable; no fp8 dtypes on the kernel boundary).
* **codebook**: indices ``uint8 (K/d, N)`` (vectors of ``d`` consecutive input features,
  as a VQ quantizer acting on the last axis of ``Wᵀ`` produces), codebooks
  ``float32 (G, C, d)`` with one codebook per group of ``group_size`` input features.

Byte counts for bandwidth use these storage sizes (``bytes_of``), not ``x.nbytes``, which
reports one byte per int4/fp4 element.

References:
  OCP Microscaling Formats (MX) Specification v1.0 (2023), Sec. 5.3.3 (E2M1 encoding) and
  Sec. 5.4.1 (E8M0); NVIDIA, "Introducing NVFP4" (2025) for the E4M3 block scale.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Integer, UInt8

from rdq.checks import require
from rdq.quantizers.fp import FPCode, FPQuantizer
from rdq.quantizers.integer import IntCode, IntQuantizer

__all__ = [
    "PackedCodebook",
    "PackedE8",
    "PackedFP4",
    "PackedInt",
    "bytes_of",
    "decode_e2m1",
    "decode_e4m3",
    "decode_e8m0",
    "pack_codebook",
    "pack_e8",
    "pack_fp4",
    "pack_int",
    "pack_int_zero_point",
    "int8_to_float",
    "nibbles_to_float",
    "pack_nibbles",
    "pack_words",
    "unpack_nibbles",
    "unpack_words",
    "word_constants",
    "words_to_planes",
]

_INT_LAYOUTS = ("int8", "nibbles", "int4", "words")


# ----------------------------------------------------------------------------- containers


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class PackedInt:
  """INT weight in kernel layout (see module docstring).

  Attributes:
    codes: ``int8 (K, N)``, ``uint8 (K, N/2)`` nibbles, ``int4 (K, N)`` or ``uint32 (K/P, N)``
      words (``P = 32 / bits``).
    scales: ``(K/g, N)`` float (fp32/bf16/fp16).
    zeros: ``int8 (K/g, N)`` zero points (dequantized ``(q - z)·s``) or ``None``.
    bits: bits per code (4 or 8).
    group_size: input features per scale (``K`` for per-output-feature scales).
    layout: ``"int8"``, ``"nibbles"``, ``"int4"`` or ``"words"``.
    signed: codes are two's complement (symmetric) rather than unsigned.
  """

  codes: Array
  scales: Array
  zeros: Array | None
  bits: int = dataclasses.field(metadata=dict(static=True))
  group_size: int = dataclasses.field(metadata=dict(static=True))
  layout: str = dataclasses.field(metadata=dict(static=True))
  signed: bool = dataclasses.field(metadata=dict(static=True), default=True)

  @property
  def shape(self) -> tuple[int, int]:
    """``(K, N)`` of the dequantized weight."""
    rows, cols = self.codes.shape
    if self.layout == "words":
      return (rows * (32 // self.bits), cols)
    return (rows, cols * 2) if self.layout == "nibbles" else (rows, cols)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class PackedFP4:
  """E2M1 weight with block scales in kernel layout.

  Attributes:
    codes: ``uint8 (K, N/2)`` E2M1 nibbles (``layout="nibbles"``), or ``uint32 (K/8, N)``
      words of 8 E2M1 nibbles along K (``layout="words"``, see the module docstring).
    scales: ``uint8 (K/block, N)`` raw e8m0 (MXFP4) or e4m3 (NVFP4) bytes.
    tensor_scale: ``float32 (1, 1)`` (NVFP4's second-level scale; 1 for MXFP4).
    block_size: input features per block scale (32 for MX, 16 for NV).
    scale_format: ``"e8m0"`` or ``"e4m3"``.
    layout: ``"nibbles"`` or ``"words"``.
  """

  codes: Array
  scales: UInt8[Array, "kb n"]
  tensor_scale: Float[Array, "1 1"]
  block_size: int = dataclasses.field(metadata=dict(static=True))
  scale_format: str = dataclasses.field(metadata=dict(static=True))
  layout: str = dataclasses.field(metadata=dict(static=True), default="nibbles")

  @property
  def shape(self) -> tuple[int, int]:
    if self.layout == "words":
      return (self.codes.shape[0] * 8, self.codes.shape[1])
    return (self.codes.shape[0], self.codes.shape[1] * 2)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class PackedCodebook:
  """VQ weight: indices into per-group codebooks.

  Attributes:
    indices: ``uint8 (K/d, N)``; entry ``[i, n]`` codes input features ``i·d … i·d+d-1``
      of output feature ``n``.
    codebooks: ``float32 (G, C, d)``, ``G = K / group_size``, ``C ≤ 256`` centroids.
    group_size: input features per codebook (a multiple of ``d``).
  """

  indices: UInt8[Array, "kd n"]
  codebooks: Float[Array, "g c d"]
  group_size: int = dataclasses.field(metadata=dict(static=True))

  @property
  def dim(self) -> int:
    return int(self.codebooks.shape[2])

  @property
  def shape(self) -> tuple[int, int]:
    return (self.indices.shape[0] * self.dim, self.indices.shape[1])


def bytes_of(packed) -> int:
  """Storage bytes of a packed weight (codes + scales + codebooks), counting int4 as ½."""
  total = 0
  for leaf in jax.tree_util.tree_leaves(packed):
    bits = jnp.dtype(leaf.dtype).itemsize * 8
    if jnp.dtype(leaf.dtype) in (jnp.dtype(jnp.int4), jnp.dtype(jnp.uint4), jnp.dtype(jnp.float4_e2m1fn)):
      bits = 4
    total += leaf.size * bits // 8
  return int(total)


# ----------------------------------------------------------------------------- nibbles


def pack_nibbles(values: Integer[Array, "k n"]) -> UInt8[Array, "k n2"]:
  """Pack 4-bit values (signed in [-8, 7] or unsigned in [0, 15]) two per byte along N.

  ``out[k, j] = (v[k, 2j] & 15) | (v[k, 2j+1] & 15) << 4``.
  """
  if values.ndim != 2 or values.shape[1] % 2:
    raise ValueError(f"pack_nibbles needs a 2-D (K, N) array with even N; got {tuple(values.shape)}")
  v = values.astype(jnp.int32) & 15
  return (v[:, 0::2] | (v[:, 1::2] << 4)).astype(jnp.uint8)


def unpack_nibbles(packed: Array, *, signed: bool) -> Integer[Array, "k n"]:
  """Inverse of ``pack_nibbles`` as int32 (usable inside kernels).

  Signed nibbles are sign-extended with an arithmetic shift of the int32 word.
  """
  b = packed.astype(jnp.int32)
  if signed:
    lo = jnp.right_shift(jnp.left_shift(b, 28), 28)
    hi = jnp.right_shift(jnp.left_shift(b, 24), 28)
  else:
    lo = b & 15
    hi = jnp.right_shift(b, 4) & 15
  rows, cols = b.shape
  return jnp.stack([lo, hi], axis=-1).reshape(rows, 2 * cols)


_MAGIC = 0x4B000000  # bit pattern of 2^23 in float32: the mantissa then holds an integer


def _magic_to_float(u: Array, offset: int) -> Array:
  """``u − offset`` as float32 for int32 ``0 ≤ u < 2^23``: ``bitcast(2^23 | u) − (2^23 + offset)``."""
  f = jax.lax.bitcast_convert_type(u | _MAGIC, jnp.float32)
  return f - jnp.float32(float(2**23 + offset))


def nibbles_to_float(packed: Array, *, signed: bool) -> Float[Array, "k n"]:
  """``unpack_nibbles`` as exact float32 values, by the exponent bit trick (in kernels).

  A signed nibble ``q ∈ [−8, 8)`` is ``(n ^ 8) − 8`` with ``n`` its bit pattern, and
  ``bitcast(0x4B000000 | u) = 2^23 + u`` in float32, so each value costs one logic op
  (``and``/``xor``/``or`` fuse into one ``LOP3`` on NVIDIA GPUs) and one float add — no
  sign extension, no int→float conversion instruction.
  """
  b = packed.astype(jnp.int32)
  flip = 8 if signed else 0
  lo = _magic_to_float((b & 15) ^ flip, flip)
  hi = _magic_to_float((jnp.right_shift(b, 4) & 15) ^ flip, flip)
  rows, cols = b.shape
  return jnp.stack([lo, hi], axis=-1).reshape(rows, 2 * cols)


def int8_to_float(codes: Array) -> Array:
  """int8 codes as exact float32 by the exponent bit trick (``(c & 255) ^ 128 = c + 128``)."""
  u = (codes.astype(jnp.int32) & 255) ^ 128
  return _magic_to_float(u, 128)


def pack_words(values: Integer[Array, "k n"], *, bits: int, signed: bool) -> Array:
  """Pack ``b``-bit codes (``b`` ∈ {4, 8}) ``P = 32/b`` per ``uint32`` word along K (rows).

  ``out[i, n] = Σ_j u[P·i + j, n] << (b·j)`` with ``u = q + 2^(b−1)`` (signed) or ``q``.
  """
  if bits not in (4, 8):
    raise ValueError(f"bits={bits!r} must be 4 or 8 for the words layout")
  per = 32 // bits
  if values.ndim != 2 or values.shape[0] % per:
    raise ValueError(f"layout='words' packs {per} input features per word; K={values.shape[0]} "
                     f"must be a multiple of {per}")
  k, n = values.shape
  u = (values.astype(jnp.int32) + (2 ** (bits - 1) if signed else 0)).astype(jnp.uint32)
  u = (u & jnp.uint32(2**bits - 1)).reshape(k // per, per, n)
  out = jnp.zeros((k // per, n), jnp.uint32)
  for j in range(per):
    out = out | jnp.left_shift(u[:, j, :], jnp.uint32(bits * j))
  return out


def unpack_words(words: Array, *, bits: int, signed: bool) -> Integer[Array, "k n"]:
  """Inverse of ``pack_words`` as int32 ``(K, N)``."""
  per = 32 // bits
  w = words.astype(jnp.uint32)
  planes = [(jnp.right_shift(w, jnp.uint32(bits * j)) & jnp.uint32(2**bits - 1)).astype(jnp.int32)
            for j in range(per)]
  v = jnp.stack(planes, axis=1).reshape(w.shape[0] * per, w.shape[1])
  return v - (2 ** (bits - 1) if signed else 0)


def word_constants(bits: int) -> Array:
  """``int32 (2, P/2)``: the masks and exponent patterns of ``words_to_planes`` (row 0, row 1)."""
  half = 16 // bits
  return jnp.asarray([[(2**bits - 1) << (bits * j) for j in range(half)],
                      [(150 - bits * j) << 23 for j in range(half)]], jnp.int32)


def words_to_planes(words: Array, *, bits: int, signed: bool, consts=None) -> list[Array]:
  """The ``P`` code planes of a word tile as exact float32: plane ``j`` is rows ``P·i + j``.

  One logic op and one float add per code, no shift for the low half-word and no
  conversion instruction: the code at bits ``s … s+b−1`` (``s = b·j ≤ 16 − b``) is placed
  in the mantissa of a float whose exponent makes that bit field's unit 1:
  ``bitcast(((150 − s) << 23) | (w & mask)) = 2^(23−s) + u`` exactly, and
  ``q = that − (2^(23−s) + offset)``. The high half-word is shifted down once per word.

  ``consts``: optionally ``word_constants(bits)`` as a ref read in the kernel: the masks and
  exponent patterns then live in registers (loaded once), so the logic op takes them as
  register operands instead of rematerialising one immediate per use.
  """
  per = 32 // bits
  w = jax.lax.bitcast_convert_type(words, jnp.int32) if words.dtype == jnp.uint32 else words
  halves = (w, jax.lax.shift_right_logical(w, jnp.int32(16)))
  off = 2 ** (bits - 1) if signed else 0
  planes = []
  for j in range(per):
    s = bits * (j % (per // 2))
    h = halves[j // (per // 2)]
    if consts is None:
      mask, magic = (2**bits - 1) << s, (150 - s) << 23
    else:
      mask, magic = consts[0, j % (per // 2)], consts[1, j % (per // 2)]
    f = jax.lax.bitcast_convert_type(magic | (h & mask), jnp.float32)
    planes.append(f - jnp.float32(float(2 ** (23 - s) + off)))
  return planes


# ----------------------------------------------------------------------------- float decoders


def _pow2(e: Array) -> Array:
  """``2^e`` as float32 for int32 ``e`` in the normal range [-126, 127] (exponent bits)."""
  return jax.lax.bitcast_convert_type(jnp.left_shift(e + 127, 23), jnp.float32)


def decode_e2m1(nibble: Integer[Array, "*s"]) -> Float[Array, "*s"]:
  """E2M1 value of a nibble ``s ee m`` (bias 1): ``±0.5·m`` if ``e = 0`` else ``±2^(e-1)(1 + m/2)``.

  By shifting the nibble into the float32 exponent: ``ee m`` placed at bits 23–22 with
  exponent bias 126 added is the bit pattern of ``2^(e−1)(1 + m/2)`` for ``e ≥ 1``; the two
  subnormal codes ``e = 0`` (``±0``, ``±0.5``) are selected separately (no denormal
  arithmetic, so the result does not depend on flush-to-zero modes).

  References: OCP MX v1.0, Sec. 5.3.3, Table 5 (values 0, 0.5, 1, 1.5, 2, 3, 4, 6).
  """
  n = nibble.astype(jnp.int32)
  sign = jnp.left_shift(n & 8, 28)
  normal = jnp.left_shift(n & 7, 22) + (126 << 23)
  sub = (n & 1) * (126 << 23)  # +0.5 or +0
  bits = jnp.where((n & 6) == 0, sub, normal) | sign
  return jax.lax.bitcast_convert_type(bits, jnp.float32)


def decode_e8m0(byte: Integer[Array, "*s"]) -> Float[Array, "*s"]:
  """E8M0 scale ``2^(E - 127)`` of a raw byte ``E`` (0 ↦ 2^-127; rdq never stores 255 = NaN).

  References: OCP MX v1.0, Sec. 5.4.1.
  """
  e = byte.astype(jnp.int32)
  normal = jax.lax.bitcast_convert_type(jnp.left_shift(e, 23), jnp.float32)
  return jnp.where(e == 0, jnp.float32(2.0**-127), normal)


def decode_e4m3(byte: Integer[Array, "*s"]) -> Float[Array, "*s"]:
  """E4M3 (``float8_e4m3fn``, bias 7) value of a raw byte: ``±2^(e-7)(1 + m/8)``, subnormal ``±m·2^-9``.

  References: Micikevicius et al., "FP8 Formats for Deep Learning" (arXiv 2209.05433), Table 1.
  """
  b = byte.astype(jnp.int32)
  e = jnp.right_shift(b, 3) & 15
  m = b & 7
  normal = jax.lax.bitcast_convert_type(
      jnp.left_shift(e + 120, 23) | jnp.left_shift(m, 20), jnp.float32
  )
  mag = jnp.where(e == 0, m.astype(jnp.float32) * jnp.float32(2.0**-9), normal)
  return jnp.where((b & 128) != 0, -mag, mag)


# ----------------------------------------------------------------------------- pack functions


def _check_range(a, name: str, lo: int, hi: int, expected: str) -> None:
  """Require every entry of ``a`` to lie in ``[lo, hi]`` (``rdq.checks.require``).

  Eagerly a violation raises ``ValueError`` naming ``name``, the offending value and the
  range; under ``checked(jax.jit(...))`` the same message is raised by checkify.
  """
  a = jnp.asarray(a)
  if a.size == 0:
    return
  ai = a.astype(jnp.int32)
  amin, amax = jnp.min(ai), jnp.max(ai)
  bad = jnp.where(amin < lo, amin, amax)
  require((amin >= lo) & (amax <= hi),
          f"{name} holds {{}} (values span [{{}}, {{}}]); expected {expected} in [{lo}, {hi}]",
          bad, amin, amax)


def _check_2d_code(codes, what: str):
  if codes.ndim != 2:
    raise ValueError(f"{what} must come from encoding the 2-D Wᵀ of shape (N, K); got codes of shape {tuple(codes.shape)}")


def pack_int(
    code: IntCode,
    quantizer: IntQuantizer,
    *,
    layout: str = "auto",
) -> PackedInt:
  """Kernel layout of ``quantizer.encode(w.T)`` for a weight ``w: (K, N)``.

  Args:
    code: ``IntCode`` from ``IntQuantizer.encode`` of ``Wᵀ`` ``(N, K)``.
    quantizer: the quantizer that produced it (bits ∈ {4, 8} after widening: 2–4-bit
      codes use the 4-bit layouts, 5–8-bit codes int8).
    layout: ``"int8"``, ``"nibbles"`` (uint8, portable), ``"int4"`` (``jnp.int4``, TPU),
      ``"words"`` (uint32, pre-permuted along K; 4- or 8-bit), or ``"auto"``: int8 for > 4
      bits, else words (nibbles if K is not a multiple of 8).

  Returns:
    ``PackedInt`` with codes ``(K, N)`` (or ``(K, N/2)`` nibbles) and scales ``(K/g, N)``.
  """
  if not isinstance(quantizer, IntQuantizer):
    raise TypeError(f"quantizer must be an IntQuantizer, got {type(quantizer).__name__}")
  _check_2d_code(code.codes, "code")
  n, k = code.codes.shape
  bits = 4 if quantizer.bits <= 4 else 8
  if layout == "auto":
    layout = ("words" if k % 8 == 0 else "nibbles") if bits == 4 else "int8"
  if layout not in _INT_LAYOUTS:
    raise ValueError(f"layout={layout!r} must be one of {_INT_LAYOUTS} or 'auto'")
  if bits == 8 and layout not in ("int8", "words"):
    raise ValueError(f"{quantizer.bits}-bit codes need layout='int8' or 'words', got {layout!r}")
  if layout == "words" and k % (32 // bits):
    raise ValueError(f"layout='words' packs {32 // bits} input features per word; K={k} must be a multiple of {32 // bits}")
  if layout == "nibbles" and n % 2:
    raise ValueError(f"layout='nibbles' packs output features in pairs; N={n} must be even")
  qmax = 2 ** (quantizer.bits - 1)
  _check_range(code.codes, "code.codes", -qmax, qmax - 1,
               f"{quantizer.bits}-bit codes of the given quantizer (IntQuantizer(bits={quantizer.bits}))")
  if quantizer.granularity == "block":
    group = quantizer.block_size
    if k % group or tuple(code.scales.shape) != (n, k // group):
      raise ValueError(
          f"code.scales has shape {tuple(code.scales.shape)}; a block quantizer with block_size={group} "
          f"on Wᵀ of shape (N, K) = {(n, k)} gives (N, K/block_size) = {(n, k // group)}")
    scales = code.scales.T
  elif quantizer.granularity == "row":
    group = k
    if tuple(code.scales.shape) not in ((n, 1), (n,)):
      raise ValueError(f"code.scales has shape {tuple(code.scales.shape)}; a per-row quantizer gives (N, 1) = {(n, 1)}")
    scales = code.scales.reshape(n, 1).T  # (N, 1) -> (1, N)
  else:
    group = k
    scales = jnp.broadcast_to(code.scales.reshape(1, 1), (1, n))
  if scales.dtype not in (jnp.float32, jnp.bfloat16, jnp.float16):
    scales = scales.astype(jnp.float32)  # e8m0 scales widened (exact)
  wq = code.codes.T.astype(jnp.int32)
  if layout == "nibbles":
    codes = pack_nibbles(wq)
  elif layout == "words":
    codes = pack_words(wq, bits=bits, signed=True)
  elif layout == "int4":
    codes = wq.astype(jnp.int4)
  else:
    codes = wq.astype(jnp.int8)
  return PackedInt(codes=codes, scales=scales, zeros=None, bits=bits, group_size=group,
                   layout=layout, signed=True)


def pack_int_zero_point(
    codes: Integer[Array, "n k"],
    scales: Float[Array, "n kg"],
    zeros: Integer[Array, "n kg"],
    *,
    bits: int,
    group_size: int,
    layout: str = "auto",
) -> PackedInt:
  """Kernel layout of an asymmetric INT code of ``Wᵀ`` (dequantized ``(q − z)·s``).

  rdq's ``IntQuantizer`` is symmetric; this packs codes made elsewhere (e.g. min–max
  quantization) with unsigned codes ``q ∈ [0, 2^b)`` and integer zero points ``z``.

  Args:
    codes: ``(N, K)`` unsigned codes.
    scales: ``(N, K/g)`` float scales.
    zeros: ``(N, K/g)`` integer zero points in ``[0, 2^b)``.
    bits: 4 or 8.
    group_size: ``g``, input features per (scale, zero) pair.
    layout: ``"nibbles"``/``"int8"``, ``"words"`` (uint32 along K, unsigned codes) or
      ``"auto"`` (nibbles for 4 bits, int8 for 8).
  """
  if bits not in (4, 8):
    raise ValueError(f"bits={bits!r} must be 4 or 8")
  if codes.ndim != 2:
    raise ValueError(f"codes must be (N, K); got shape {tuple(codes.shape)}")
  n, k = codes.shape
  if not isinstance(group_size, int) or group_size < 1 or k % group_size:
    raise ValueError(f"group_size={group_size!r} must divide K={k}")
  for name, a in (("scales", scales), ("zeros", zeros)):
    if tuple(a.shape) != (n, k // group_size):
      raise ValueError(f"{name} must have shape (N, K/g) = {(n, k // group_size)}; got {tuple(a.shape)}")
  if not jnp.issubdtype(codes.dtype, jnp.integer) or not jnp.issubdtype(zeros.dtype, jnp.integer):
    raise TypeError(f"codes and zeros must be integer arrays; got {codes.dtype} and {zeros.dtype}")
  if layout == "auto":
    layout = "nibbles" if bits == 4 else "int8"
  if layout not in ("nibbles", "int8", "words") or (bits == 8 and layout == "nibbles"):
    raise ValueError(f"layout={layout!r} is not available for unsigned {bits}-bit codes")
  if layout == "words" and k % (32 // bits):
    raise ValueError(f"layout='words' packs {32 // bits} input features per word; K={k} must be a multiple of {32 // bits}")
  _check_range(codes, "codes", 0, 2**bits - 1, f"unsigned {bits}-bit codes")
  _check_range(zeros, "zeros", 0, 2**bits - 1, f"{bits}-bit zero points")
  if layout == "words":  # 8-bit: decoded as q − 128 with z − 128 stored, as for int8
    off = 128 if bits == 8 else 0
    return PackedInt(codes=pack_words(codes.T.astype(jnp.int32) - off, bits=bits, signed=bits == 8),
                     scales=scales.T, zeros=(zeros.T.astype(jnp.int32) - off).astype(jnp.int8),
                     bits=bits, group_size=group_size, layout="words", signed=bits == 8)
  if bits == 8:
    # uint8 codes and zero points: store q - 128 and z - 128 in int8 ((q-z) unchanged).
    q = (codes.T.astype(jnp.int32) - 128).astype(jnp.int8)
    z = (zeros.T.astype(jnp.int32) - 128).astype(jnp.int8)
    return PackedInt(codes=q, scales=scales.T, zeros=z, bits=8, group_size=group_size,
                     layout="int8", signed=True)
  q = codes.T.astype(jnp.int32)
  packed = pack_nibbles(q) if layout == "nibbles" else q.astype(jnp.int8)
  return PackedInt(codes=packed, scales=scales.T, zeros=zeros.T.astype(jnp.int8), bits=4,
                   group_size=group_size, layout=layout, signed=layout == "int8")


def pack_fp4(code: FPCode, quantizer: FPQuantizer, *, layout: str = "auto") -> PackedFP4:
  """Kernel layout of an MXFP4 / NVFP4 ``encode(w.T)`` (E2M1 elements, block scales).

  Args:
    code: ``FPCode`` of ``Wᵀ`` ``(N, K)`` from ``FPQuantizer("e2m1", block, "e8m0"|"e4m3")``.
    quantizer: that quantizer.
    layout: ``"words"`` (``uint32 (K/8, N)``, 8 E2M1 nibbles along K per word, raw
      ``s ee m`` patterns), ``"nibbles"`` (``uint8 (K, N/2)``), or ``"auto"`` (words).

  Returns:
    ``PackedFP4`` with the codes, raw scale bytes ``(K/block, N)`` and the tensor scale
    ``(1, 1)`` (1.0 when the quantizer has none).
  """
  if layout == "auto":
    layout = "words"
  if layout not in ("words", "nibbles"):
    raise ValueError(f"layout={layout!r} must be 'words', 'nibbles' or 'auto'")
  if not isinstance(quantizer, FPQuantizer):
    raise TypeError(f"quantizer must be an FPQuantizer, got {type(quantizer).__name__}")
  if quantizer.element != "e2m1" or quantizer.scale_format not in ("e8m0", "e4m3"):
    raise ValueError(
        "pack_fp4 needs E2M1 elements with e8m0 (MX) or e4m3 (NV) block scales; got "
        f"element={quantizer.element!r}, scale_format={quantizer.scale_format!r}"
    )
  _check_2d_code(code.codes, "code")
  n, k = code.codes.shape
  if layout == "nibbles" and n % 2:
    raise ValueError(f"E2M1 nibbles pack output features in pairs; N={n} must be even")
  if layout == "words" and k % 8:
    raise ValueError(f"layout='words' packs 8 input features per word; K={k} must be a multiple of 8")
  nib = jax.lax.bitcast_convert_type(code.codes, jnp.uint4).astype(jnp.int32).T
  scales = jax.lax.bitcast_convert_type(code.scales, jnp.uint8).T
  t = jnp.float32(1.0) if code.tensor_scale is None else code.tensor_scale
  return PackedFP4(
      codes=pack_words(nib, bits=4, signed=False) if layout == "words" else pack_nibbles(nib),
      scales=scales,
      tensor_scale=jnp.asarray(t, jnp.float32).reshape(1, 1),
      block_size=quantizer.block_size,
      scale_format=quantizer.scale_format,
      layout=layout,
  )


def pack_codebook(
    indices: Integer[Array, "n kd"],
    codebooks: Float[Array, "g c d"],
    *,
    group_size: int,
) -> PackedCodebook:
  """Kernel layout of VQ codes of ``Wᵀ`` ``(N, K)``: indices ``(N, K/d)`` along K.

  Args:
    indices: centroid index of each ``d``-vector of input features, shape ``(N, K/d)``,
      integers in ``[0, C)``.
    codebooks: ``(G, C, d)`` float, one codebook per ``group_size`` input features.
    group_size: input features per codebook; ``G · group_size = K``.

  Returns:
    ``PackedCodebook`` with ``uint8 (K/d, N)`` indices and fp32 codebooks.
  """
  if indices.ndim != 2 or codebooks.ndim != 3:
    raise ValueError(
        f"indices must be (N, K/d) and codebooks (G, C, d); got {tuple(indices.shape)} and {tuple(codebooks.shape)}"
    )
  if not jnp.issubdtype(indices.dtype, jnp.integer):
    raise TypeError(f"indices.dtype={indices.dtype} must be an integer type")
  g, c, d = codebooks.shape
  if d not in (1, 2, 4, 8):
    raise ValueError(f"codebook dimension d={d} must be 1, 2, 4 or 8")
  if not 1 <= c <= 256:
    raise ValueError(f"codebooks hold C={c} centroids; uint8 indices need 1 ≤ C ≤ 256")
  k = indices.shape[1] * d
  if not isinstance(group_size, int) or group_size < d or group_size % d or k % group_size:
    raise ValueError(f"group_size={group_size!r} must be a multiple of d={d} that divides K={k}")
  if g != k // group_size:
    raise ValueError(f"codebooks has G={g} groups but K/group_size = {k}/{group_size} = {k // group_size}")
  _check_range(indices, "indices", 0, c - 1, f"centroid indices of a codebook with C={c} centroids")
  return PackedCodebook(indices=indices.T.astype(jnp.uint8), codebooks=codebooks.astype(jnp.float32),
                        group_size=group_size)


# ----------------------------------------------------------------------------- E8 nested-lattice codes


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class PackedE8:
  """E8 Voronoi-code weight (``rdq.quantizers.nested``) in kernel layout: coordinate planes.

  Attributes:
    planes: ``uint8 (b, K/8, N)`` with ``b = bits`` byte planes: coordinate ``t`` of the E8
      block ``i`` (input features ``8i … 8i+7``) of output feature ``n`` is the Voronoi
      coordinate ``c_t ∈ [0, q)`` stored in bits ``bits·(t mod p) …`` of
      ``planes[t // p, i, n]``, ``p = 8 / bits`` coordinates per byte (``bits`` = ⌈log2 q⌉
      rounded up to 1, 2, 4 or 8). Splitting the 8 coordinates of a block into planes makes
      the E8 decode a set of elementwise operations between planes (no shuffles), and the
      codes cost ``bits`` per weight in memory.
    beta_index: ``uint8 (K/8, N)`` index of each block's scale β.
    scale: ``float32 (1, N)`` per-output-feature RMS scale (ones without ``norm``).
    q: nesting ratio. betas: the scales β (static: constants in the kernel).
  """

  planes: UInt8[Array, "8 kb n"]
  beta_index: UInt8[Array, "kb n"]
  scale: Float[Array, "1 n"]
  q: int = dataclasses.field(metadata=dict(static=True))
  betas: tuple = dataclasses.field(metadata=dict(static=True))

  @property
  def bits(self) -> int:
    """Bits per stored coordinate (1, 2, 4 or 8)."""
    return coordinate_bits(self.q)

  @property
  def shape(self) -> tuple[int, int]:
    return (self.planes.shape[1] * 8, self.planes.shape[2])

  def coordinate(self, planes, t: int):
    """Coordinate plane ``t`` (int32) from a byte-plane loader ``planes(j)`` (in kernels)."""
    b = self.bits
    p = 8 // b
    v = planes(t // p).astype(jnp.int32)
    if b == 8:
      return v
    return jnp.right_shift(v, b * (t % p)) & ((1 << b) - 1)


def coordinate_bits(q: int) -> int:
  """Storage bits of a coordinate in ``[0, q)``: ⌈log2 q⌉ rounded up to 1, 2, 4 or 8."""
  need = max(1, (q - 1).bit_length())
  return next(b for b in (1, 2, 4, 8) if b >= need)


def pack_e8(code, quantizer) -> PackedE8:
  """Kernel layout of ``NestedLatticeQuantizer("e8", q, betas).encode(w.T)`` for ``w: (K, N)``.

  Args:
    code: ``NestedCode`` of ``Wᵀ`` ``(N, K)`` (codes ``(N, K)``, β indices ``(N, K/8)``,
      optional per-row scale ``(N, 1)``).
    quantizer: the ``NestedLatticeQuantizer`` (E8 lattice, no dither, q ≤ 256).
  """
  from rdq.quantizers.lattice import E8Lattice
  from rdq.quantizers.nested import NestedLatticeQuantizer

  if not isinstance(quantizer, NestedLatticeQuantizer):
    raise TypeError(f"quantizer must be a NestedLatticeQuantizer, got {type(quantizer).__name__}")
  if not isinstance(quantizer.lattice, E8Lattice):
    raise ValueError(f"pack_e8 needs the E8 lattice; got lattice={quantizer.lattice.name!r}")
  if quantizer.dither:
    raise ValueError("pack_e8: dither=True needs the dither key at decode time; the kernel decodes without dither")
  if quantizer.q > 256:
    raise ValueError(f"q={quantizer.q} must be ≤ 256 (uint8 coordinates)")
  _check_2d_code(code.codes, "code")
  n, k = code.codes.shape
  if k % 8:
    raise ValueError(f"K={k} must be a multiple of 8 (E8 blocks)")
  if tuple(code.beta_index.shape) != (n, k // 8):
    raise ValueError(f"code.beta_index must have shape (N, K/8) = {(n, k // 8)}; got {tuple(code.beta_index.shape)}")
  _check_range(code.codes, "code.codes", 0, quantizer.q - 1, f"Voronoi coordinates mod q={quantizer.q}")
  _check_range(code.beta_index, "code.beta_index", 0, quantizer.k - 1,
               f"indices into the {quantizer.k} scales β")
  bits = coordinate_bits(quantizer.q)
  p = 8 // bits
  c = code.codes.astype(jnp.int32).reshape(n, k // 8, 8).transpose(2, 1, 0)  # (8, K/8, N)
  planes = jnp.zeros((bits, k // 8, n), jnp.int32)
  for t in range(8):
    planes = planes.at[t // p].set(planes[t // p] | jnp.left_shift(c[t], bits * (t % p)))
  planes = planes.astype(jnp.uint8)
  if code.scale is None:
    scale = jnp.ones((1, n), jnp.float32)
  else:
    scale = code.scale.astype(jnp.float32).reshape(n, 1).T
  return PackedE8(planes=planes, beta_index=code.beta_index.astype(jnp.uint8).T, scale=scale,
                  q=quantizer.q, betas=tuple(quantizer.betas))
