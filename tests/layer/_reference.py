"""Plain, unblocked NumPy GPTQ in torch layout (W_t: (out, in)), float64: the test oracle.

Written from Frantar et al. (2023), Algorithm 1, and the min-max grid of the reference
``quant.py`` (its ``Quantizer.find_params``); one input feature (a torch column) at a time, no lazy
batching. Group parameters are fitted on the current, error-updated columns.
"""

import numpy as np


def _fit(cols, bits, sym):
  """cols: (out, g). Returns per-output (scale, zero)."""
  maxq = 2**bits - 1
  xmin = np.minimum(cols.min(axis=1), 0.0)
  xmax = np.maximum(cols.max(axis=1), 0.0)
  if sym:
    xmax = np.maximum(-xmin, xmax)
    xmin = -xmax
  zr = (xmax - xmin) == 0
  xmin[zr], xmax[zr] = -1.0, 1.0
  scale = ((xmax - xmin) / maxq).astype(np.float16).astype(np.float64)
  zero = np.full_like(scale, (maxq + 1) / 2) if sym else np.round(-xmin / scale)
  return scale, zero


def gptq_reference(w, h, bits=4, sym=True, group_size=None, percdamp=0.01, act_order=False):
  """Returns (W_hat, codes) in rdq layout (n, m) for rdq-layout inputs w (n, m), h (n, n)."""
  wt = np.array(w, np.float64).T.copy()  # torch layout (out, in)
  hh = np.array(h, np.float64)
  n = wt.shape[1]
  perm = np.argsort(-np.diag(hh), kind="stable") if act_order else np.arange(n)
  wt = wt[:, perm]
  hh = hh[np.ix_(perm, perm)]
  hh = hh + percdamp * np.mean(np.diag(hh)) * np.eye(n)
  hinv = np.linalg.cholesky(np.linalg.inv(hh)).T  # upper: inv(H) = hinvᵀ hinv
  q = np.zeros_like(wt)
  z = np.zeros(wt.shape, np.int64)
  maxq = 2**bits - 1
  if group_size is None:
    scale, zero = _fit(wt, bits, sym)
  for i in range(n):
    if group_size is not None and i % group_size == 0:
      scale, zero = _fit(wt[:, i : i + group_size], bits, sym)
    col = wt[:, i]
    zi = np.clip(np.round(col / scale) + zero, 0, maxq)
    qi = scale * (zi - zero)
    err = (col - qi) / hinv[i, i]
    wt[:, i:] -= np.outer(err, hinv[i, i:])
    q[:, i], z[:, i] = qi, zi
  inv = np.argsort(perm)
  return q[:, inv].T, z[:, inv].T
