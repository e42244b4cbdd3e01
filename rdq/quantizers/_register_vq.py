"""Registry entries for per-group vector quantizers (``rdq.quantizers.vq``).

Name grammar: ``vq<d>_b<b>_g<ℓ>[_fp32|_int8]`` — dimension d, b index bits per value
(k = 2^{d·b} centroids), one codebook per ℓ consecutive values of the last axis, fp16
codebooks unless a format is named. Bits per value: ``b + (k·d·b_c [+16 for int8])/ℓ``.
"""

from __future__ import annotations

from rdq.quantizers.registry import register
from rdq.quantizers.vq import VQQuantizer

register(
    r"vq(?P<d>\d+)_b(?P<b>\d+)_g(?P<g>\d+)(?:_(?P<fmt>fp32|fp16|int8))?",
    lambda m: VQQuantizer(dim=int(m["d"]), bits=int(m["b"]), group_size=int(m["g"]), codebook_format=m["fmt"] or "fp16"),
    ("vq1_b2_g64", "vq2_b3_g256_int8", "vq4_b1_g256"),
    "vq<d>_b<b>_g<group>[_fp32|_fp16|_int8]: d-dim VQ, 2^(d·b) centroids per group of <group> values "
    "(weighted k-means++/EM), b + (k·d·b_c [+16])/group bits per value",
)
