"""Hyper-parameter grids, their extension, runs and seed studies."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

KNOB_SCALES = ("log", "log1m", "logit")


class MethodGrid(NamedTuple):
  """A method's tuning grid: learning rates x one knob, plus fixed settings.

  ``knob_scale`` says how the knob's grid grows past an edge: ``"log"``
  (decays, coefficients: geometric), ``"log1m"`` (``1 - x`` geometric:
  Adam's beta2, momentum) or ``"logit"`` (fractions in (0, 1))."""
  lrs: tuple[float, ...]
  knob: str                      # the name of the second axis
  knob_values: tuple[float, ...]
  fixed: dict[str, float] = {}   # settings every configuration shares
  knob_scale: str = "log"


class Run(NamedTuple):
  method: str
  config: dict[str, float]
  seed: int


def log_grid(low: float, high: float, num: int) -> tuple[float, ...]:
  """``num`` log-spaced values from ``low`` to ``high`` (rounded to 3 digits)."""
  if num < 2 or not 0 < low < high:
    raise ValueError(f"log_grid needs 0 < low < high and num >= 2, got "
                     f"{low}, {high}, {num}")
  return tuple(float(f"{v:.3g}") for v in np.geomspace(low, high, num))


def _to_line(x: float, scale: str) -> float:
  if scale == "log":
    return math.log(x)
  if scale == "log1m":
    return -math.log(1.0 - x)
  return math.log(x / (1.0 - x))


def _from_line(t: float, scale: str) -> float:
  if scale == "log":
    return math.exp(t)
  if scale == "log1m":
    return 1.0 - math.exp(-t)
  return 1.0 / (1.0 + math.exp(-t))


def extend_grid(values: Sequence[float], side: str, scale: str = "log"
                ) -> float | None:
  """The next value past the ``side`` (``"low"``/``"high"``) edge of a
  sorted grid, one outermost step further on the knob's ``scale``; rounded
  to 3 significant digits (of ``1 - x`` near 1). ``"log1m"`` knobs (betas,
  momentum) live in [0, 1): a step below 0 stops at 0.0, and ``None`` says
  the low side is exhausted (the grid already holds 0.0)."""
  if scale not in KNOB_SCALES:
    raise ValueError(f"scale must be one of {KNOB_SCALES}, got {scale!r}")
  if side not in ("low", "high"):
    raise ValueError(f"side must be 'low' or 'high', got {side!r}")
  v = sorted(values)
  if len(v) < 2:
    raise ValueError("a grid needs >= 2 values to be extended")
  a, b = (v[0], v[1]) if side == "low" else (v[-1], v[-2])
  ta, tb = _to_line(a, scale), _to_line(b, scale)
  t = ta + (ta - tb)
  if scale == "log1m" and t < 0.0:   # below x = 0, the domain's end
    if a <= 0.0:
      return None
    t = 0.0
  new = _from_line(t, scale)
  # Round to 3 significant digits of the distance to the domain's end that
  # matters (1 - x for betas: 0.9999 stays 0.9999, not 1.0).
  if scale == "log1m":
    return 1.0 - float(f"{1.0 - new:.3g}")
  if scale == "logit" and new > 0.5:
    return 1.0 - float(f"{1.0 - new:.3g}")
  return float(f"{new:.3g}")


def _extend(values: Sequence[float], side: str, scale: str
            ) -> tuple[str, float]:
  """``extend_grid`` on ``side``, or on the other side where ``side`` has
  reached the domain's end (the method keeps its equal budget)."""
  new = extend_grid(values, side, scale)
  if new is None:
    side = "high" if side == "low" else "low"
    new = extend_grid(values, side, scale)
  assert new is not None   # a domain has at most one closed end
  return side, new


def make_studies(seeds: Sequence[int], num_studies: int,
                 per_study: int) -> list[dict[str, list[int]]]:
  """``num_studies`` studies with disjoint selection sets of ``per_study``
  seeds (consecutive in ``seeds``); each reports on every other seed."""
  seeds = list(seeds)
  if len(set(seeds)) != len(seeds):
    raise ValueError(f"seeds must be distinct, got {seeds}")
  if num_studies < 1 or per_study < 1 or num_studies * per_study > len(seeds):
    raise ValueError(f"{num_studies} studies x {per_study} selection seeds "
                     f"need that many distinct seeds; got {len(seeds)}")
  if len(seeds) - per_study < 2:
    raise ValueError("each study needs >= 2 report seeds for an interval")
  out = []
  for k in range(num_studies):
    sel = seeds[k * per_study:(k + 1) * per_study]
    out.append({"selection_seeds": sel,
                "report_seeds": [s for s in seeds if s not in sel]})
  return out
