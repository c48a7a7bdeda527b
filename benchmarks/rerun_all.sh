#!/usr/bin/env bash
# Re-runs committed comparisons at the current code, one after another, with
# --out benchmarks/results (each job's log in .runs/, progress in
# .runs/progress.log). Jobs: quick mnist1d retraction sgd fashion movielens
# lm lm12k (default: all, in that order; ~3 h on 2 CPU cores alone, about
# 2 h as two queues side by side).
# Then: python -m benchmarks.report (README) and the docs build.
set -u
cd "$(dirname "$0")/.."
mkdir -p .runs
run() {
  name=$1; shift
  echo "== $name start $(date -u +%H:%M:%S)" >> .runs/progress.log
  "$@" > ".runs/$name.log" 2> ".runs/$name.err"
  rc=$?
  echo "== $name end $(date -u +%H:%M:%S) rc=$rc" >> .runs/progress.log
}
jobs=("$@")
[ ${#jobs[@]} -eq 0 ] && jobs=(quick mnist1d retraction sgd fashion movielens lm lm12k)
for job in "${jobs[@]}"; do
  case $job in
    quick) run quick python -m benchmarks.generalization --out benchmarks/results ;;
    mnist1d) run mnist1d python -m benchmarks.generalization --preset mnist1d --out benchmarks/results ;;
    retraction) run retraction python -m benchmarks.retraction --out benchmarks/results ;;
    sgd) run sgd python -m benchmarks.generalization --preset mnist1d-sgd-lamb --batch-sizes 64 512 --epochs 15 --max-extensions 4 --out benchmarks/results ;;
    fashion) run fashion python -m benchmarks.generalization --preset fashion-cpu --optimizers adam adamw lawn-adam lawn-adam-auto --batch-sizes 256 1024 --epochs 6 --max-extensions 4 --out benchmarks/results ;;
    movielens) run movielens python -m benchmarks.generalization --preset movielens-cpu --batch-sizes 256 1024 --epochs 2 --max-extensions 4 --out benchmarks/results ;;
    lm) run lm python -m benchmarks.language_model --cpu --out benchmarks/results ;;
    lm12k) run lm12k python -m benchmarks.language_model --preset cpu-12k --out benchmarks/results ;;
    *) echo "unknown job $job" >&2; exit 2 ;;
  esac
done
echo "== done $(date -u +%H:%M:%S)" >> .runs/progress.log
