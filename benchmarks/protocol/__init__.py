"""The comparison protocol shared by the accuracy benchmarks.

One *cell* is (dataset or corpus, batch size); inside it every method gets

* the same tuning budget: ``len(lrs) x len(knob values)`` configurations,
  where the knob is the method's own second hyper-parameter (Adam's beta2,
  SGD's momentum, a weight-decay strength, LAWN's free fraction, the z-loss
  coefficient, ...): an equally sized second axis for everyone;
* a learning-rate grid of >= 6 log-spaced values and a knob grid of >= 3;
* warmup + cosine decay (:func:`warmup_cosine`), the same for everyone;
* **every configuration on every seed** (>= 8): the whole matrix of
  validation and test metrics is kept, so any selection can be recomputed;
* **repeated studies** (AlgoPerf's remedy for a noisy tuning step): study
  ``k`` selects each method's configuration on validation over its own
  selection seeds (disjoint from every other study's) and reports test on the
  seeds it did not select on, paired by seed (same seed = same
  initialisation and data order for every method);
* grids that contain the optimum: while the value of *either* axis chosen by
  any study (or by the all-seed selection the figures use) sits at an edge of
  its grid, that axis grows by one value for every method (a method not at
  that edge spends the extension on the side nearer its choice), so budgets
  stay equal. Extensions are recorded;
* a verdict that survives the tuning step (:func:`verdict_of_studies`): a
  *win* or a *loss* only when every study says so and the pooled interval
  (per seed, the difference averaged over the studies that report that seed;
  95% t-interval over seeds) excludes 0; *unstable* when studies disagree.

Runs are described as ``Run(method, config, seed)``; a benchmark supplies
``run_many(runs) -> list[dict]`` that trains them (in one vmapped program
when it can) and returns each run's metrics.

Modules: :mod:`.grids` (grids, their extension, seed studies),
:mod:`.tuning` (the loop and its reports), :mod:`.statistics` (intervals
and verdicts, scipy's t quantiles), :mod:`.training` (the traced optimizer
of a run) and :mod:`.programs` (many runs of one vmapped program: memory,
padding, progress). ``README.md`` says what the package is.
"""

from benchmarks.protocol.grids import (
    KNOB_SCALES,
    MethodGrid,
    Run,
    extend_grid,
    log_grid,
    make_studies,
)
from benchmarks.protocol.programs import (
    PaddedProgram,
    Progress,
    memory_limit,
    pad_runs,
    pad_width,
)
from benchmarks.protocol.statistics import (
    mean_interval,
    paired_interval,
    summarize,
    t_quantile_975,
    verdict,
    verdict_of_studies,
)
from benchmarks.protocol.training import (
    FAMILIES,
    HP_DEFAULTS,
    NEVER,
    build_optimizer,
    stack_hps,
    warmup_cosine,
)
from benchmarks.protocol.tuning import (
    PROTOCOL_TEXT,
    Tuning,
    method_records,
    report,
    seed_averaged,
    selections,
    sensitivity,
    subset_report,
    tune,
    with_subset,
)

__all__ = [
    "FAMILIES", "HP_DEFAULTS", "KNOB_SCALES", "NEVER", "PROTOCOL_TEXT",
    "MethodGrid", "PaddedProgram", "Progress", "Run", "Tuning",
    "build_optimizer", "extend_grid", "log_grid", "make_studies",
    "mean_interval", "memory_limit", "method_records", "pad_runs",
    "pad_width", "paired_interval", "report", "seed_averaged", "selections",
    "sensitivity", "stack_hps", "subset_report", "summarize",
    "t_quantile_975", "tune", "verdict", "verdict_of_studies",
    "warmup_cosine", "with_subset",
]
