"""Docstring paragraphs shared by several public functions (private).

A docstring holds a marker line (``[last-transform]``, ``[lawn-wrapper]``)
where the paragraph goes; :func:`shared` fills it in at import, with the
function's name, so the text lives here once and ``help()``, doctests and
the API docs all read the filled-in docstring.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable)

PARAGRAPHS = {
    "last-transform": """\
Make it the last transform of a chain: anything after it (clipping,
a scaling, another optimizer) changes the update it retracted and the
norms drift, silently (:func:`lawn_optax.check_norms` shows it); put
clipping before it, e.g. ``optax.chain(optax.clip_by_global_norm(1.0),
lo.{name}(...))``.""",
    "lawn-wrapper": """\
Every argument of :func:`lawn_optax.lawn` but ``base_tx`` is an argument
here too, with the same default and meaning (``free_steps``, ``mask``,
``granularity``, ``tangent_projection``, ``unit_axis``, ``norm_eps``,
``retraction``), forwarded as it is; the base optimizer's own arguments
are listed below.""",
    "curvature-scale": """\
The scale of layer ``l`` is ``trust_coefficient / c_l``. Guards: a zero,
negative, NaN or infinite estimate (zero weights, no step yet) gives
scale 1; scales are clipped to ``[min_scale, max_scale]``.
``reduction="median"`` replaces a ratio of norms by the median of the
element-wise values within the layer (MCLR's within-layer median);
``relative_to="median"`` divides every ``c_l`` by the median over layers,
so a layer of median curvature gets scale ``trust_coefficient`` (MCLR's
across-layer normalisation).""",
}


def shared(fn: F) -> F:
  """Fills each ``[key]`` marker line of ``fn``'s docstring with
  ``PARAGRAPHS[key]``, indented as the marker is."""
  lines: list[str] = []
  for line in (fn.__doc__ or "").splitlines():
    key = line.strip()[1:-1]
    if line.strip().startswith("[") and key in PARAGRAPHS:
      indent = line[:len(line) - len(line.lstrip())]
      text = PARAGRAPHS[key].format(name=fn.__name__)
      lines.extend(indent + t if t else t for t in text.splitlines())
    else:
      lines.append(line)
  fn.__doc__ = "\n".join(lines)
  return fn
