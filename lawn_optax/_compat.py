"""Every use of a private jax or optax API, in one guarded place (private).

Each has a fallback that keeps the library working (with a plainer message
or location) if a release moves it; tests/test_compat.py checks both sides.
"""

from __future__ import annotations

from typing import Any

import jax

# optax's wording of the error for an update without params.
_NO_PARAMS_FALLBACK = (
    "You are using a transformation that requires the current value of "
    "parameters, but you are not passing `params` when calling `update`.")


def no_params_message() -> str:
  """``optax._src.base.NO_PARAMS_MSG``, or the same words if it moved."""
  try:
    from optax._src import base  # pylint: disable=g-import-not-at-top
    return str(base.NO_PARAMS_MSG)
  except (ImportError, AttributeError):
    return _NO_PARAMS_FALLBACK


def user_frames(traceback: Any) -> list[Any]:
  """The frames of a traced equation's traceback outside jax
  (``jax._src.source_info_util.user_frames``), or none if it moved: the
  analysis then names primitives without source lines."""
  try:
    from jax._src import source_info_util  # pylint: disable=g-import-not-at-top
    return list(source_info_util.user_frames(traceback))
  except Exception:  # pylint: disable=broad-except
    return []


def is_params_placeholder(x: Any) -> bool:
  """``optax.tree.map_params`` calls ``init`` with an empty placeholder tree
  (a private class) to find the copies of the params in a state; matched by
  its name and emptiness, as optax exposes no public test for it."""
  return type(x).__name__ == "_ParamsPlaceholder" and not jax.tree.leaves(x)
