"""Shakespeare splits: disjoint plays, recorded digests, plain text, evenly spaced windows."""

import numpy as np
import pytest

from rdq.models import text as T


def test_splits_are_disjoint_and_fixed():
  names = T.play_names()
  assert len(names) == 38
  calib, ev = T.play_splits()
  assert set(calib.names).isdisjoint(ev.names)
  assert set(calib.names) | set(ev.names) == set(names)
  assert ev.names == tuple(sorted(T.EVAL_PLAYS))
  assert T.play_splits()[1].digest == ev.digest
  assert len(ev.digest) == 64 and ev.digest != calib.digest


def test_plain_text():
  s = T.play_text("macbeth")
  assert s.startswith("Macbeth\n\nACT I\n")
  assert "**" not in s and "  \n" not in s and "\n#" not in s
  assert "First Witch\nWhen shall we three meet again\nIn thunder, lightning, or in rain?" in s


def test_bad_names():
  with pytest.raises(KeyError, match="hamlet"):
    T.play_text("hamlett")
  with pytest.raises(ValueError, match="unknown"):
    T.play_splits(("hamlet", "nope"))


def test_pick_windows_evenly_spaced():
  w = np.arange(100).reshape(10, 10)
  np.testing.assert_array_equal(T.pick_windows(w, 2)[:, 0], [20, 70])
  assert T.pick_windows(w, None) is w and T.pick_windows(w, 50) is w


def test_docstring_text_digest_is_stable():
  a, da = T.docstring_text()
  b, db = T.docstring_text()
  assert a == b and da == db and len(a) > 10_000
