"""Intervals and verdicts: the statistics of the protocol."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats


def t_quantile_975(df: int) -> float:
  """The two-sided 95% Student-t quantile ``t_{0.975, df}``."""
  if df < 1:
    raise ValueError("a paired interval needs at least 2 seeds")
  return float(stats.t.ppf(0.975, df))


def mean_interval(d: Sequence[float]) -> dict[str, Any]:
  """Mean of ``d`` and its 95% t-interval, with :func:`verdict`."""
  d = np.asarray(d, np.float64)
  if d.ndim != 1 or d.size < 2:
    raise ValueError(f"an interval needs >= 2 values (2 seeds), got shape "
                     f"{d.shape}")
  mean = float(d.mean())
  if not np.all(np.isfinite(d)):
    return {"mean": mean, "low": float("nan"), "high": float("nan"),
            "verdict": "undefined (non-finite)"}
  half = t_quantile_975(d.size - 1) * float(d.std(ddof=1)) / math.sqrt(d.size)
  low, high = mean - half, mean + half
  return {"mean": mean, "low": low, "high": high,
          "verdict": verdict(low, high)}


def paired_interval(a: Sequence[float], b: Sequence[float]
                    ) -> dict[str, Any]:
  """Mean of ``a - b`` (paired by position) and its 95% t-interval."""
  if np.shape(a) != np.shape(b):
    raise ValueError(f"paired_interval needs two equal-length sequences of "
                     f">= 2 values, got shapes {np.shape(a)}, {np.shape(b)}")
  return mean_interval(np.asarray(a, np.float64) - np.asarray(b, np.float64))


def verdict(low: float, high: float) -> str:
  if low > 0:
    return "higher"
  if high < 0:
    return "lower"
  return "no difference"


def verdict_of_studies(studies: Sequence[str], pooled: str) -> str:
  """The cell's reading: the studies' common verdict when they agree (a
  difference only if the pooled interval agrees too), ``"unstable"`` when
  they disagree (or when they agree on a difference the pooled interval
  does not show)."""
  kinds = set(studies)
  if len(kinds) != 1:
    return "unstable"
  (common,) = kinds
  if common in ("higher", "lower") and pooled != common:
    return "unstable"
  return common


def summarize(values: Sequence[float]) -> tuple[float, float]:
  v = np.asarray(values, np.float64)
  return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0
