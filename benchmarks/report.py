"""Results pages written from the committed JSON in benchmarks/results/.

  python -m benchmarks.report               # README's generated sections
  python -m benchmarks.report --docs PATH   # the docs site's results page

Every table is computed from a JSON file (never retyped); each section names
its file, the command that produced it, the git commit and the device.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from benchmarks import common

TITLES = {"mnist1d": "MNIST-1D", "fashion_mnist": "Fashion-MNIST",
          "movielens": "MovieLens (NCF)", "digits": "scikit-learn digits"}


def instruction_set(flags: list[str] | None) -> str:
  """``"AVX-512"``, ``"AVX2"`` or ``""`` (unknown) from a CPU's vector flags
  (``environment.cpu_flags`` of a results JSON, or
  :func:`benchmarks.common.cpu_flags`): XLA:CPU's kernels differ between
  AVX2 and AVX-512 hosts, so a table reproduces bit for bit only on a host
  with its instruction set."""
  if not flags:
    return ""
  return "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else ""


def _isa(env: dict) -> str:
  """`` (AVX2)`` or `` (AVX-512)`` after a CPU table's model, or nothing."""
  isa = instruction_set(env.get("cpu_flags"))
  return f" ({isa})" if isa else ""


def _provenance(results: dict) -> str:
  env = results.get("environment", {})
  device = (env.get("cpu_model", "?") + _isa(env)
            + f", {env.get('cpu_count', '?')} cores"
            if env.get("backend") == "cpu" else env.get("device_kind", "?"))
  minutes = results.get("compute_seconds", results.get("seconds_total", 0)) / 60
  return (f"`{env.get('command', '?')}` at commit "
          f"`{str(env.get('git_commit', '?'))[:10]}`, jax {env.get('jax', '?')} "
          f"on {device}; {minutes:.0f} min of compute")


def stale_line(results: dict) -> str | None:
  """The line a table shows when the code that produced it has changed
  since (or when its file records no code hash)."""
  changed = common.stale_files(results)
  commit = str(results.get("environment", {}).get("git_commit", "?"))[:10]
  if changed is None:
    return (f"**Stale: this table records no code hash** (produced at "
            f"`{commit}`, before hashes were kept); re-run its command.")
  if changed:
    return (f"**Stale: produced at `{commit}`; these files changed since:** "
            f"{', '.join(f'`{f}`' for f in changed)}. Re-run its command to "
            "refresh it.")
  return None


def _with_stale(results: dict, lines: list[str]) -> list[str]:
  line = stale_line(results)
  return lines if line is None else [line, ""] + lines


def _figures(path: Path, suffixes: list[str], docs: bool) -> list[str]:
  if not docs:
    return []
  out = []
  for suffix in suffixes:
    png = path.with_name(path.stem + suffix)
    if png.exists():
      out += [f"![{png.name}](../../benchmarks/results/{png.name})", ""]
  return out


def _generalization_section(path: Path, docs: bool = False) -> list[str]:
  from benchmarks.tables import generalization_table
  r = json.loads(path.read_text())
  if "comparisons" not in r or "studies" not in r:
    raise ValueError(f"{path} predates the comparison protocol: move it to "
                     "benchmarks/results/legacy/")
  head = (f"**{TITLES.get(r['dataset'], r['dataset'])}**, {r['model']} "
          f"({r['num_params']:,} parameters), {r['num_train']:,} training "
          f"examples, {r['epochs']} epochs ({_provenance(r)}); "
          f"`{path.name}`:")
  return _with_stale(r, [head, "", generalization_table(r, r["metric"]), ""]
                     + _figures(path, ["_sensitivity.png", "_norms.png"],
                                docs))


def _language_model_section(path: Path, docs: bool = False) -> list[str]:
  from benchmarks.tables import language_model_table
  r = json.loads(path.read_text())
  if "studies" not in r:
    raise ValueError(f"{path} predates the comparison protocol: move it to "
                     "benchmarks/results/legacy/")
  c = r["config"]
  head = (f"**Character-level GPT** (d={c['d']}, {c['depth']} layers, "
          f"{c['heads']} heads, context {c['seq']}, {r['num_params']:,} "
          f"parameters) on {r['corpus']['train_bytes']:,} training bytes, "
          f"{c['epochs']} epochs at every batch size ({_provenance(r)}); "
          f"`{path.name}`:")
  figs = [f"_B{b['batch_size']}_curves.png" for b in r["batches"]]
  return _with_stale(r, [head, "", language_model_table(r), ""]
                     + _figures(path, ["_sensitivity.png"] + figs, docs))


def _results(pattern: str, results_dir: Path) -> list[Path]:
  return sorted(results_dir.glob(pattern))


def generalization_section(results_dir: Path = common.RESULTS,
                           docs: bool = False) -> str:
  lines: list[str] = []
  for path in _results("generalization_*.json", results_dir):
    lines += _generalization_section(path, docs)
  return "\n".join(lines).strip()


def language_model_section(results_dir: Path = common.RESULTS,
                           docs: bool = False) -> str:
  lines: list[str] = []
  for path in _results("language_model_*.json", results_dir):
    lines += _language_model_section(path, docs)
  return "\n".join(lines).strip()


# README's summary: the comparisons a reader asks about first.
SUMMARY_PAIRS = [("lawn-adam", "adam"), ("lawn-adam", "adamw"),
                 ("lawn-adam (auto, default)", "lawn-adam"),
                 ("lawn-adam-auto", "lawn-adam"),
                 ("lawn-sgdm", "sgdm"), ("lawn-lamb", "lamb")]
_AUTO = "lawn-adam-auto (default, lr only)"
_LABELS = {_AUTO: "free_steps=auto (default) − tuned LAWN-Adam",
           "lawn-adam-auto": "free_steps=auto (threshold tuned) − tuned LAWN-Adam"}


def _summary_rows(path: Path) -> list[str]:
  r = json.loads(path.read_text())
  lm = "batches" in r
  if lm:
    comps = [{**c, "batch_size": b["batch_size"]} for b in r["batches"]
             for c in b["comparisons"]]
    name, scale, unit = f"char-LM, {r['corpus']['train_bytes']:,} bytes", 1.0, "bpc"
    better, worse = "lower", "higher"
  else:
    comps = r["comparisons"]
    name = (TITLES.get(r["dataset"], r["dataset"]) + f", {r['epochs']} epochs"
            + (" (main job)" if "quick" in path.stem else ""))
    scale, unit, better, worse = 100.0, "points", "higher", "lower"
  rows = []
  for a, b in SUMMARY_PAIRS:
    a = _AUTO if a.startswith("lawn-adam (auto") else a
    for c in comps:
      if (c["a"], c["b"]) != (a, b):
        continue
      who = "auto" if a in (_AUTO, "lawn-adam-auto") else "LAWN"
      reading = {better: f"**{who} better**", worse: f"**{who} worse**",
                 "unstable": "*unstable*"}.get(c["verdict"], "no difference")
      reading += _closeness(c)
      digits = 3 if lm else 2
      rows.append(f"| {name} | {c['batch_size']} | "
                  f"{_LABELS.get(a, a + ' − ' + b)} | "
                  f"{scale * c['mean']:+.{digits}f} [{scale * c['low']:+.{digits}f}, "
                  f"{scale * c['high']:+.{digits}f}] {unit} | {reading} |")
  stale = stale_line(r)
  if stale and rows:
    rows.append(f"| {name} | | {stale} | | |")
  return rows


def not_rerun(results_dir: Path = common.RESULTS) -> list[str]:
  """Studies published under the first (one-study) protocol that have no
  successor under the current one yet (sorted file names)."""
  old = results_dir / "legacy" / "first_protocol"
  return sorted(p.name for p in old.glob("*.json")
                if not (results_dir / p.name).exists())


def _closeness(c: dict[str, Any]) -> str:
  """How many studies are significant on their own, and which way: the
  distance of a verdict from its neighbour (a last-bit change that flips one
  study moves "no difference" to "unstable"), e.g. `` (2/4 ▼)``."""
  studies = c.get("studies") or []
  if not studies:
    return ""
  up = sum(st.get("verdict") == "higher" for st in studies)
  down = sum(st.get("verdict") == "lower" for st in studies)
  marks = " ".join(f"{k}/{len(studies)} {m}" for k, m in ((up, "▲"),
                                                          (down, "▼")) if k)
  return f" ({marks or f'0/{len(studies)} significant'})"


def summary_section(results_dir: Path = common.RESULTS) -> str:
  """README's short table: every file's headline comparisons (pooled
  difference over seeds, 95% interval, the reading over studies)."""
  rows = []
  for pattern in ("generalization_*.json", "language_model_*.json"):
    for path in _results(pattern, results_dir):
      rows += _summary_rows(path)
  missing = not_rerun(results_dir)
  tail = ([] if not missing else [
      "", "Not re-run under this protocol yet, so not shown: "
      + ", ".join(f"`{m}`" for m in missing) + " (their one-study v0.2 "
      "tables, whose verdicts may not survive a repeated study, are in "
      "`benchmarks/results/legacy/first_protocol/`)."])
  return "\n".join([
      "| task | batch | difference | pooled [95% CI] | reading |",
      "|---|---|---|---|---|", *rows, "",
      "A difference is *better*/*worse* only when every repeated study (each "
      "selecting on its own seeds) says so and the pooled interval excludes 0; "
      "*unstable* when the studies disagree; in brackets, how many studies "
      "are significant on their own (▲ higher, ▼ lower), i.e. how near a "
      "verdict is to its neighbour. Every table, with each study's "
      "difference, the regime (train loss, logit norm) and the sensitivity "
      "figures: `benchmarks/results/*.md` and the docs' results page.",
      *tail])


def _overhead_section(path: Path) -> list[str]:
  from benchmarks.overhead import table
  results = json.loads(path.read_text())
  env = results.get("environment", {})
  return [f"### {path.stem}", "",
          f"`{env.get('command', '?')}` at commit `{env.get('git_commit', '?')}`"
          f" on {env.get('device_kind', '?')}. {results.get('note', '')}", "",
          table(results["cells"]), ""]


def docs_page(results_dir: Path = common.RESULTS) -> str:
  lines = ["# Benchmark results", "",
           "Generated by `python -m benchmarks.report` from the JSON files in "
           "`benchmarks/results/`; the protocol is in `benchmarks/README.md`.",
           "", "## Summary", "", summary_section(results_dir), "",
           "## Generalization", "",
           generalization_section(results_dir, docs=True), "",
           "## Language model", "",
           language_model_section(results_dir, docs=True), "",
           "## Regime map", "", regime_section(results_dir), ""]
  groups = _regime_groups(results_dir)
  for dataset in groups:
    for stem in ("regime_map", "regime_sensitivity"):
      name = stem + _regime_suffix(groups, dataset) + ".png"
      if (results_dir / name).exists():
        lines += [f"![{name}](../../benchmarks/results/{name})", ""]
  lines += ["## Step cost", ""]
  for path in sorted(results_dir.glob("overhead*.json")):
    lines += _overhead_section(path)
  return "\n".join(lines)


README = Path(__file__).resolve().parents[1] / "README.md"


def _device(env: dict) -> str:
  if env.get("backend") == "cpu":
    return f"{env['cpu_model']}{_isa(env)}, {env['cpu_count']} cores"
  return f"{env['device_kind']} ({env['backend']})"


# Issue 13's targets: (what, optimizer, variant, program, field, bound).
TARGETS = [
    ("XLA bytes, update+apply", "adam", "lawn-tensor", "update",
     "bytes_ratio", 1.5),
    ("XLA bytes, update+apply", "sgdm", "lawn-tensor", "update",
     "bytes_ratio", 1.7),
    ("wall clock, update+apply, constrained phase", "adam", "lawn-tensor",
     "update", "ratio", 2.0),
    ("wall clock, full train step", "adam", "lawn-tensor", "step", "ratio",
     1.05),
    ("wall clock, update+apply, free phase", "adam", "lawn-free", "update",
     "ratio", 1.10),
]


def _mlp24(results: dict) -> dict[str, dict]:
  return {c["optimizer"]: c for c in results["cells"]
          if c["model"] == "mlp" and c["width"] == 4096}


def _step_cost_table(results: dict, name: str) -> list[str]:
  env = results["environment"]
  cells = list(_mlp24(results).values())
  names = [n for n in cells[0]["variants"] if n != "base"]
  calls = cells[0].get("calls_per_repeat", 1)
  partial = ("" if results.get("complete", True) else
             f" Partial run: the run stopped after {len(results['cells'])} "
             "cells.")
  head = ("| variant | " + " | ".join(
      f"{c['optimizer']}: bytes / temp MiB / time [IQR] / full step"
      for c in cells) + " |")
  lines = [f"**{_device(env)}**, jax {env['jax']}, commit "
           f"`{env['git_commit'][:10]}`, `{name}`: median of "
           f"{cells[0]['repeats']} interleaved repeats"
           + (f" of {calls} calls each" if calls > 1 else "")
           + "; base update+apply / full step: " + ", ".join(
               f"{c['optimizer']} "
               f"{1e3 * c['variants']['base']['update']['median_s']:.3g} / "
               f"{1e3 * c['variants']['base']['step']['median_s']:.3g} ms"
               for c in cells) + "; base temp MiB: " + ", ".join(
               f"{c['optimizer']} "
               f"{c['variants']['base']['update']['temp_bytes'] / 2**20:.0f}"
               for c in cells) + "." + partial, "",
           head, "|---|" + "---|" * len(cells)]
  for variant in names:
    row = []
    for c in cells:
      base_med = c["variants"]["base"]["update"]["median_s"]
      u, s = c["variants"][variant]["update"], c["variants"][variant]["step"]
      q1, q3 = (q / base_med for q in u["iqr_s"])
      noise = " (noise)" if u["noise"] or s["noise"] else ""
      row.append(f"{u['bytes_ratio']:.2f} / {u['temp_bytes'] / 2**20:.0f}"
                 f" / {u['ratio']:.2f} [{q1:.2f}-{q3:.2f}] / "
                 f"{s['ratio']:.2f}{noise}")
    lines.append(f"| {variant} | " + " | ".join(row) + " |")
  return lines + [""]


def step_cost_section(results_dir: Path = common.RESULTS) -> str:
  """README's step-cost summary: the 24M MLP rows of every overhead JSON
  (CPU first) and issue 13's targets against each."""
  files = sorted(results_dir.glob("overhead*.json"),
                 key=lambda f: (f.stem != "overhead", f.stem))
  runs = [(f.name, json.loads(f.read_text())) for f in files]
  lines = ["24M-parameter MLP (784-4096-4096-1024-10, all kernels "
           "constrained): ratios to the base optimizer from the same run "
           "(update+apply with donated buffers, inter-quartile range of the "
           "variant's times over the base median; full train step at batch "
           "256). Bytes are XLA's `bytes accessed`; gated variants over-count "
           "where XLA keeps the branch, as it counts both branches of a "
           "conditional. Temp is XLA's temporary buffer for update+apply. "
           "Every cell, the smaller MLPs and the CNNs: "
           "`benchmarks/results/overhead*.md`.", ""]
  for name, results in runs:
    lines += _with_stale(results, _step_cost_table(results, name))
  return "\n".join(lines + [step_cost_targets(results_dir)])


def step_cost_targets(results_dir: Path = common.RESULTS) -> str:
  """README's step-cost lines: issue 13's targets against every overhead
  JSON (each run's device, commit, and whether its code changed since)."""
  files = sorted(results_dir.glob("overhead*.json"),
                 key=lambda f: (f.stem != "overhead", f.stem))
  runs = [(f.name, json.loads(f.read_text())) for f in files]
  lines = [f"- `{name}`: {_device(r['environment'])}, jax "
           f"{r['environment']['jax']}, commit "
           f"`{str(r['environment']['git_commit'])[:10]}`. "
           + (stale_line(r) or "Current.") for name, r in runs]
  lines += ["", "Issue 13's targets, LAWN (`lawn-tensor`, `lawn-free`) on the "
            "24M MLP:", "",
            "| | target | " + " | ".join(
                _device(r["environment"]) for _, r in runs) + " |",
            "|---|---|" + "---|" * len(runs)]
  for what, opt, variant, prog, field, bound in TARGETS:
    row = []
    for _, results in runs:
      cell = _mlp24(results).get(opt)
      if cell is None:
        row.append("not run")
        continue
      value = cell["variants"][variant][prog][field]
      row.append(f"{value:.2f} ({'met' if value <= bound else 'not met'})")
    lines.append(f"| {what}, {opt} | <= {bound} | " + " | ".join(row) + " |")
  return "\n".join(lines + [""] + projection_target(runs))


# Issue 40's target: the projection path's update+apply at most this many
# times the hand-written peer's, measured in the same run.
PROJECTION_BOUND = 1.10


def projection_target(runs: list[tuple[str, dict]]) -> list[str]:
  """README's lines on issue 40: ``lawn-projection`` (and ``peer-capture``,
  LAWN by hand) over ``peer`` on the 24M MLP, update+apply, per optimizer,
  with XLA's bytes and temporary buffer beside them."""
  lines = ["Issue 40's target, the projection path (`lawn-projection`: "
           "`retraction=\"projection\"` + `lo.project_norms`) on the 24M "
           "MLP: update+apply time over the hand-written `peer`'s (constant "
           f"norms) from the same run, at most {PROJECTION_BOUND}; "
           "`peer-capture` is LAWN by hand (the norms taken on the freeze "
           "step with a `where`). Bytes and temp MiB: XLA's.", "",
           "| run | optimizer | lawn-projection / peer | peer-capture / peer "
           "| bytes: lawn-projection, peer | temp MiB: lawn-projection, "
           "peer |", "|---|---|---|---|---|---|"]
  for name, results in runs:
    for opt, cell in _mlp24(results).items():
      v = cell["variants"]
      if "lawn-projection" not in v or "peer" not in v:
        continue
      peer = v["peer"]["update"]
      ratio = v["lawn-projection"]["update"]["median_s"] / peer["median_s"]
      by_hand = (f"{v['peer-capture']['update']['median_s'] / peer['median_s']:.2f}"
                 if "peer-capture" in v else "not run")
      u = v["lawn-projection"]["update"]
      lines.append(
          f"| `{name}` | {opt} | {ratio:.2f} "
          f"({'met' if ratio <= PROJECTION_BOUND else 'not met'}) | "
          f"{by_hand} | {u['bytes_ratio']:.2f}, {peer['bytes_ratio']:.2f} | "
          f"{u['temp_bytes'] / 2**20:.1f}, {peer['temp_bytes'] / 2**20:.1f} |")
  return lines


def _regime_groups(results_dir: Path) -> dict[str, list[tuple[Path, dict]]]:
  """Every ``regime_*.json`` by dataset (one map each), the dataset with
  the most cells first."""
  groups: dict[str, list[tuple[Path, dict]]] = {}
  for path in _results("regime_*.json", results_dir):
    r = json.loads(path.read_text())
    groups.setdefault(r["dataset"], []).append((path, r))
  size = lambda d: -sum(len(r["cells"]) for _, r in groups[d])
  return {d: groups[d] for d in sorted(groups, key=lambda d: (size(d), d))}


def _regime_suffix(groups: dict[str, Any], dataset: str) -> str:
  """File-name suffix of a dataset's regime figures: none for the first
  map (MNIST-1D's, the one the README links), the dataset's name else."""
  return "" if dataset == next(iter(groups)) else f"_{dataset}"


def regime_section(results_dir: Path = common.RESULTS) -> str:
  """README's regime maps, one per dataset: every ``regime_*.json`` (one per
  command), each with its command, commit and staleness, then one table of
  their cells and its reading."""
  groups = _regime_groups(results_dir)
  if not groups:
    return "Not run yet: `python -m benchmarks.regime` (see its docstring)."
  parts = []
  for dataset, entries in groups.items():
    if len(groups) > 1:
      parts += [f"**{TITLES.get(dataset, dataset)}**", ""]
    parts += [_regime_map(entries), ""]
  return "\n".join(parts).rstrip()


def _regime_map(entries: list[tuple[Path, dict]]) -> str:
  from benchmarks import tables
  lines = []
  for path, r in entries:
    env = r["environment"]
    done = ", ".join(f"B={c['batch_size']} × {c['steps']} steps"
                     for c in r["cells"])
    lines.append(
        f"- `{path.name}`: `{env.get('command', '?')}`, {_device(env)}, "
        f"commit `{str(env['git_commit'])[:10]}`, "
        f"{r.get('wall_seconds', 0) / 60:.0f} min"
        + ("" if r.get("complete") else " (partial)") + f"; cells: {done}. "
        + (stale_line(r) or "Current."))
  files = [r for _, r in entries]
  first, cells = files[0], tables.regime_cells(files)
  fixed = {n: k for r in files for n, k in r["fixed_knobs"].items()}
  knobs = ", ".join(f"{n} {k}" for n, k in fixed.items())
  lines += ["", f"{first['dataset']}, {first['model']}, "
            f"{first['num_train']} training samples; second hyper-parameters "
            f"fixed for every method alike ({knobs}), learning rates tuned "
            "under the protocol; test accuracy per seed averaged over the "
            "studies that report it.", "",
            tables.regime_table(cells), "", tables.regime_reading(cells)]
  return "\n".join(lines)


def regime_figures(results_dir: Path = common.RESULTS) -> list[str]:
  """Per dataset, the heat map of every regime cell, and test accuracy vs
  learning rate for each large-batch (>= 512) cell in the small-loss
  regime."""
  from benchmarks import tables
  out = []
  groups = _regime_groups(results_dir)
  for dataset, entries in groups.items():
    suffix = _regime_suffix(groups, dataset)
    cells = tables.regime_cells([r for _, r in entries])
    out.append(tables.regime_figure(
        cells, str(results_dir / f"regime_map{suffix}.png")))
    panels = [(f"B={c['batch_size']}, {c['steps']} steps", c["methods"])
              for c in cells if c["batch_size"] >= 512
              and tables.regime_loss(c) <= tables.SMALL_LOSS]
    if panels:
      out.append(tables.sensitivity_figure(
          panels, str(results_dir / f"regime_sensitivity{suffix}.png"),
          "test accuracy", scale=100))
  return out


SECTIONS = {"summary": summary_section, "step-cost": step_cost_targets,
            "regime": regime_section}


def render_readme(text: str) -> str:
  """``text`` with every generated section rewritten from the JSON."""
  for name, make in SECTIONS.items():
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    i, j = text.index(start) + len(start), text.index(end)
    text = text[:i] + "\n" + make() + "\n" + text[j:]
  return text


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--docs", type=Path,
                  help="write the docs results page (Markdown) there")
  ap.add_argument("--figures", action="store_true",
                  help="redraw every figure from the committed JSON")
  args = ap.parse_args(argv)
  if args.figures:
    from benchmarks import tables
    for path in _results("generalization_*.json", common.RESULTS):
      tables.generalization_plots(json.loads(path.read_text()),
                                  str(path.with_suffix("")))
    for path in _results("language_model_*.json", common.RESULTS):
      tables.language_model_plots(json.loads(path.read_text()),
                                  str(path.with_suffix("")))
    regime_figures()
    print("redrew the figures in", common.RESULTS)
    return
  if args.docs:
    args.docs.write_text(docs_page())
    print(f"wrote {args.docs}")
    return
  README.write_text(render_readme(README.read_text()))
  print(f"rewrote the generated sections of {README}")


if __name__ == "__main__":
  main()
