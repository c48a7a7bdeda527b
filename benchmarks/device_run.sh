#!/usr/bin/env bash
# The accelerator session behind the committed GPU results: every job in
# turn, each under its own time limit, results packed after each one (so a
# job that runs out of time loses only itself). Run from the repository
# root with the datasets under .gpudata/ (fashion/, dslabs/, austen/) and
# $OUT set; on the project's lent machine the wheels in .whl/ pin flax/optax.
# Arguments name the jobs to run, e.g. `device_run.sh overhead`. With none,
# one 15-minute session runs, in ~11 minutes from its first line and in the
# order the results matter, each job in its own slice (every study sizes
# its work to its slice from a measured calibration, and its chunks of runs
# to the device's memory by compiling them: benchmarks/protocol/programs.py):
#   step_cost    (~4 min) the 24M MLP cells with the projection path and the
#                peer, a GPT-2-small LM step and a BN ResNet step
#   fashion_cnn  (~3 min) the BN ResNet on Fashion-MNIST
#   lm_gpu       (~3 min) a 7M-parameter GPT on Austen
# Every job writes its JSON as it goes ("complete": false until the end).
set -u
JOBS=${*:-"step_cost fashion_cnn lm_gpu"}
R=$OUT/results; mkdir -p "$R"
export PYTHONUNBUFFERED=1
# The studies pin themselves to one CPU for bit-reproducible CPU runs
# (benchmarks/common.py); an accelerator's host keeps all of its CPUs.
export LAWN_OPTAX_CPU_THREADS=0
pack() { tar czf "$OUT/results.tgz" -C "$OUT" results; }
job() {  # job NAME SECONDS COMMAND...
  local name=$1 limit=$2; shift 2
  case " $JOBS " in *" $name "*) ;; *) return 0 ;; esac
  local t0=$SECONDS
  timeout "$limit" "$@" > "$R/log_$name.txt" 2>&1
  echo "$name: rc $? in $((SECONDS - t0)) s" | tee -a "$R/jobs.txt"
  tail -3 "$R/log_$name.txt"
  pack
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$R/device.txt" 2>&1
python3 -c "import jax, flax, optax; print(jax.__version__, flax.__version__, optax.__version__, jax.devices())" >> "$R/device.txt" 2>&1
cat "$R/device.txt"
job lm 180 python3 -m benchmarks.language_model --full --data .gpudata/austen --out "$R"
job fashion 60 python3 -m benchmarks.generalization --preset fashion --data .gpudata/fashion --out "$R"
job mnist1d 110 python3 -m benchmarks.generalization --full --out "$R"
job movielens 40 python3 -m benchmarks.generalization --preset movielens --data .gpudata/dslabs/Rdata --out "$R"
job overhead 420 python3 -m benchmarks.overhead --full --repeats 15 --out "$R" --tag _gpu
job step_cost 240 python3 -m benchmarks.overhead --suite device --repeats 15 --out "$R" --tag _gpu_suite
job fashion_cnn 200 python3 -m benchmarks.device_jobs fashion-cnn --budget 150 --data .gpudata/fashion --out "$R"
job lm_gpu 200 python3 -m benchmarks.device_jobs lm-gpu --budget 150 --data .gpudata/austen --out "$R"
# The projection's tests on the accelerator's jax (its fusion decides the
# temporaries that test_constrain_after asserts on).
job tests 100 python3 -m pytest -q -o addopts="" -p no:cacheprovider tests/test_constrain_after.py tests/test_lawn.py
cat "$R/jobs.txt"
