#!/usr/bin/env bash
# Re-runs every committed CPU table at the current code, one job after
# another, with --out benchmarks/results (each job's log in .runs/, progress
# in .runs/progress.log). Jobs, in the default order (the retraction
# ablation reads the MNIST-1D table's choices, so it follows it):
#   quick mnist1d retraction b2048 sgd fashion movielens lm lm12k
#   regime_b64 regime_b512 regime_b512_all regime_b2048 regime_b2048_all
#   regime_fashion design overhead
# Split them over two queues side by side (two shells, a job list each), but
# run `overhead` alone on an idle machine: it times things. The full re-run of
# 2026-12-06 (AVX-512 host, each job on one core beside the other queue):
# quick 4 min, mnist1d 26, retraction 1, b2048 25, sgd 19, fashion 16,
# movielens 14, lm 15, lm12k 8, regime_* 2-13, design 12; about 95 min on
# two queues, then overhead alone (regime_fashion, 37 min at 3,200 steps,
# came later); on the slower AVX2 hosts before it, 10-120 min a job.
# A table reproduces bit for bit only on a host with its instruction set
# (README, "Same command, same bits"): re-run every table on one host type.
# tests/test_benchmarks.py checks that every committed table's recorded
# command is here.
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
[ ${#jobs[@]} -eq 0 ] && jobs=(quick mnist1d retraction b2048 sgd fashion movielens lm lm12k
  regime_b64 regime_b512 regime_b512_all regime_b2048 regime_b2048_all regime_fashion
  design overhead)
seeds="100 101 102 103 104 105 106 107"   # the design runs' seeds (never 0-7)
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
    b2048) run b2048 python -m benchmarks.generalization --preset mnist1d --optimizers adam adamw lawn-adam --batch-sizes 2048 --epochs 133 --max-extensions 4 --out benchmarks/results --tag _b2048_400steps ;;
    regime_b64) run regime_b64 python -m benchmarks.regime --batch-sizes 64 --steps 100 400 1600 6400 --optimizers adam adamw lawn-adam --out benchmarks/results --tag _b64 ;;
    regime_b512) run regime_b512 python -m benchmarks.regime --batch-sizes 512 --steps 100 400 1600 --optimizers adam adamw lawn-adam --out benchmarks/results --tag _b512 ;;
    regime_b512_all) run regime_b512_all python -m benchmarks.regime --batch-sizes 512 --steps 400 --optimizers adam adamw lawn-adam lawn-adamw lawn-adam-auto --out benchmarks/results --tag _b512_all ;;
    regime_b2048) run regime_b2048 python -m benchmarks.regime --batch-sizes 2048 --steps 100 400 --optimizers adam adamw lawn-adam --out benchmarks/results --tag _b2048 ;;
    regime_b2048_all) run regime_b2048_all python -m benchmarks.regime --batch-sizes 2048 --steps 400 --optimizers adam adamw lawn-adam lawn-adamw lawn-adam-auto --out benchmarks/results --tag _b2048_all ;;
    regime_fashion) run regime_fashion python -m benchmarks.regime --preset fashion --out benchmarks/results ;;
    design)
      d=benchmarks/results/design
      run design_b64 python -m benchmarks.generalization --preset mnist1d --optimizers lawn-adam lawn-adam-auto --batch-sizes 64 --seeds $seeds --out $d --tag _design_b64
      run design_b2048 python -m benchmarks.generalization --preset mnist1d --optimizers lawn-adam lawn-adam-auto --batch-sizes 2048 --seeds $seeds --out $d --tag _design_b2048
      run design_digits python -m benchmarks.generalization --preset mnist1d --dataset digits --optimizers lawn-adam lawn-adam-auto --batch-sizes 64 --seeds $seeds --out $d --tag _design_b64
      python -m benchmarks.autofreeze_design $d/generalization_mnist1d_design_b64.json $d/generalization_mnist1d_design_b2048.json $d/generalization_digits_design_b64.json --out $d/autofreeze_design.json > $d/autofreeze_design.md ;;
    overhead) run overhead python -m benchmarks.overhead --out benchmarks/results ;;
    *) echo "unknown job $job" >&2; exit 2 ;;
  esac
done
echo "== done $(date -u +%H:%M:%S)" >> .runs/progress.log
