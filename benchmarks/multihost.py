"""LAWN on JAX's multi-controller runtime: one process per host, one global mesh.

Local CPU (2 processes x 4 devices = one 2x4 mesh, collectives over gloo):

  python -m benchmarks.multihost launch --processes 2 --local-devices 4 -- \\
      --method lawn --steps 12 --free-steps 5 --out /tmp/mh

The same global run in one process (8 devices) for comparison:

  python -m benchmarks.multihost run --local-devices 8 --method lawn --out /tmp/sp

On a real cluster start ``run`` once per host with ``--coordinator auto``:
``jax.distributed.initialize()`` then reads the cluster's environment (SLURM,
Cloud TPU, ...).

A small Flax linen MLP is trained on a fixed synthetic global batch with the params and
the optimizer state sharded FSDP-style (each kernel's output axis over
``fsdp``, the batch over ``data``). Sharding rules of LAWN's state: per-tensor
targets are scalars, replicated; per-unit targets ``(1, out)`` are sharded
like the kernel's unit axis. Each process writes ``result_<pid>.npz`` (final
params gathered to every host, the frozen norms it sees) and ``hlo.txt`` (the
compiled update+apply), from which the tests check equality with the
single-process run, identical norms on every host and the collectives.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

SIZES = (16, 64, 64, 8)
BATCH = 32


def _setup(args):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             f" --xla_force_host_platform_device_count="
                             f"{args.local_devices}")
  import jax
  if args.num_processes > 1 or args.coordinator == "auto":
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if args.coordinator == "auto":
      jax.distributed.initialize()
    else:
      jax.distributed.initialize(args.coordinator,
                                 num_processes=args.num_processes,
                                 process_id=args.process_id)
  return jax


def _method(name, mask, free_steps, granularity):
  import optax

  import lawn_optax as lo
  if name == "lawn":
    return lo.lawn_adam(1e-2, free_steps=free_steps, mask=mask,
                        granularity=granularity)
  if name == "fixnorm":
    return lo.fixnorm(optax.adam(1e-2), mask=mask, granularity=granularity)
  if name == "wrs":
    return lo.weight_rescaling(optax.adam(1e-2), mask=mask, period=2,
                               granularity=granularity)
  raise ValueError(f"unknown method {name!r}")


def run(args) -> None:
  jax = _setup(args)
  import numpy as np
  import optax
  from jax.sharding import Mesh

  import lawn_optax as lo

  mesh = Mesh(np.array(jax.devices()).reshape(2, -1), ("data", "fsdp"))
  from benchmarks import models
  model = models.MLP(SIZES[1:-1], SIZES[-1])  # a Flax linen MLP
  host, params, x, y, x_bad = _sharded_inputs(jax, mesh, model)
  mask = lo.masks.kernels(host)
  if args.bad_mask_on_last and jax.process_index() == args.num_processes - 1:
    mask = {k: v for k, v in mask.items() if k != "Dense_2"}  # a host's bug
  agree_on_mask(mask, host)
  tx = _method(args.method, mask, args.free_steps, args.granularity)
  if args.nan_at is not None:
    tx = optax.apply_if_finite(tx, max_consecutive_errors=3)
  state = jax.jit(tx.init)(params)

  def loss(p, x, y):
    logits = model.apply({"params": p}, x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  def update_apply(p, s, g):
    u, s = tx.update(g, s, p)
    return optax.apply_updates(p, u), s

  grad = jax.jit(jax.grad(loss))
  step = jax.jit(update_apply, donate_argnums=(0, 1))
  out = Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  # Every process lowers (and runs) the same programs: collectives must match.
  hlo = step.lower(params, state, grad(params, x, y)).compile().as_text()
  if jax.process_index() == 0:
    (out / "hlo.txt").write_text(hlo)
  checkpointer, start, params, state = _checkpointer(args, jax, mesh, params,
                                                     state)
  for t in range(start, args.steps):
    batch = x_bad if t == args.nan_at else x
    params, state = step(params, state, grad(params, batch, y))
    if checkpointer is not None and t + 1 in args.save_at:
      checkpointer.save(Path(args.ckpt_dir).resolve() / str(t + 1),
                        {"params": params, "state": state})
      checkpointer.wait_until_finished()
    if args.kill_at == t + 1 and jax.process_index() == args.num_processes - 1:
      import signal
      os.kill(os.getpid(), signal.SIGKILL)  # a host dies mid-run
  _save_result(jax, params, state, out)
  print(f"process {jax.process_index()}/{jax.process_count()}: "
        f"{jax.device_count()} devices, {args.steps} steps of {args.method}, "
        f"loss {float(loss(params, x, y)):.6f}", flush=True)


def _sharded_inputs(jax, mesh, model):
  """The host's params, and the params, batch and NaN batch (the last
  process's half is NaN) as global arrays: kernels sharded over ``fsdp``,
  the batch over ``data``."""
  import numpy as np
  from jax.sharding import NamedSharding
  from jax.sharding import PartitionSpec as P

  rng = np.random.default_rng(0)
  x_host = rng.normal(size=(BATCH, SIZES[0])).astype(np.float32)
  y_host = rng.integers(0, SIZES[-1], BATCH).astype(np.int32)
  host = jax.tree.map(np.asarray, model.init(jax.random.key(0),
                                             x_host[:2])["params"])

  def spec(path, leaf):
    return P(None, "fsdp") if leaf.ndim == 2 else P()

  shardings = jax.tree_util.tree_map_with_path(
      lambda p, v: NamedSharding(mesh, spec(p, v)), host)
  params = jax.tree.map(
      lambda v, s: jax.make_array_from_callback(v.shape, s, lambda i: v[i]),
      host, shardings)
  batch_sharding = NamedSharding(mesh, P("data"))
  bad_host = x_host.copy()
  bad_host[BATCH // 2:] = np.nan
  x, y, x_bad = (jax.make_array_from_callback(
      a.shape, batch_sharding, lambda i, a=a: a[i])
                 for a in (x_host, y_host, bad_host))
  return host, params, x, y, x_bad


def _checkpointer(args, jax, mesh, params, state):
  """orbax's checkpointer when ``--ckpt-dir`` is given, and, with
  ``--resume``, the step, params and state of its last checkpoint restored
  into this run's shardings (another process count reshards)."""
  if not args.ckpt_dir:
    return None, 0, params, state
  import orbax.checkpoint as ocp
  from jax.sharding import NamedSharding
  from jax.sharding import PartitionSpec as P
  checkpointer = ocp.StandardCheckpointer()
  ckpt = Path(args.ckpt_dir).resolve()
  saved = sorted(int(d.name) for d in ckpt.glob("[0-9]*")) if (
      ckpt.exists()) else []
  if not (args.resume and saved):
    return checkpointer, 0, params, state
  replicated = NamedSharding(mesh, P())
  target = jax.tree.map(
      lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=(
          a.sharding if isinstance(a.sharding, NamedSharding)
          else replicated)), {"params": params, "state": state})
  restored = checkpointer.restore(ckpt / str(saved[-1]), target)
  return checkpointer, saved[-1], restored["params"], restored["state"]


def _save_result(jax, params, state, out: Path) -> None:
  """This process's gathered params and frozen norms, as NumPy."""
  import numpy as np
  from jax.experimental import multihost_utils

  import lawn_optax as lo
  gathered = multihost_utils.process_allgather(params, tiled=True)
  frozen = lo.frozen_norms(state)
  frozen_host = {} if frozen is None else {
      lo._tree.path_str(k): np.asarray(multihost_utils.process_allgather(
          v, tiled=True))
      for k, v in jax.tree_util.tree_flatten_with_path(
          frozen, is_leaf=lo._tree.is_masked_node)[0]
      if not lo._tree.is_masked_node(v)}
  flat = {"param/" + lo._tree.path_str(k): np.asarray(v)
          for k, v in jax.tree_util.tree_flatten_with_path(gathered)[0]}
  flat.update({"frozen/" + k: v for k, v in frozen_host.items()})
  np.savez(out / f"result_{jax.process_index()}.npz", **flat)


def agree_on_mask(mask, params) -> None:
  """Every process resolves ``mask`` against ``params``; if any fails, or
  they select different leaves, every process raises the same error (instead
  of one failing and the others waiting on its collectives)."""
  import numpy as np
  from jax.experimental import multihost_utils

  import lawn_optax as lo
  try:
    flags, message = lo._tree.broadcast_mask(mask, params), ""
  except (TypeError, ValueError) as e:
    import jax
    flags, message = [], f"process {jax.process_index()}: {e}"
  encoded = np.frombuffer(message.encode()[:2048].ljust(2048, b"\0"),
                          np.uint8)
  messages = np.asarray(multihost_utils.process_allgather(encoded))
  errors = [bytes(m).rstrip(b"\0").decode() for m in messages.reshape(
      -1, 2048) if m.any()]
  if errors:
    raise ValueError("the mask does not match the params on every process: "
                     + errors[0])
  selected = np.asarray(flags, np.int32)
  everyone = np.asarray(multihost_utils.process_allgather(selected))
  if not (everyone.reshape(-1, len(selected)) == selected).all():
    raise ValueError("the mask selects different parameters on different "
                     "processes.")


def launch(args, rest) -> int:
  """Starts ``--processes`` local copies of ``run`` and waits for them.

  Each process's stderr goes to its own file and is printed whole once the
  processes have ended, one after the other: messages of different processes
  never interleave mid-line."""
  import tempfile
  port = args.port
  logs = [tempfile.TemporaryFile(mode="w+") for _ in range(args.processes)]
  procs = [subprocess.Popen(
      [sys.executable, "-m", "benchmarks.multihost", "run",
       "--process-id", str(i), "--num-processes", str(args.processes),
       "--coordinator", f"localhost:{port}",
       "--local-devices", str(args.local_devices), *rest], stderr=logs[i])
           for i in range(args.processes)]
  # Like a job scheduler: when one process dies, stop the others (they
  # would wait on its collectives), and give up after --timeout seconds.
  import time
  deadline = time.monotonic() + args.timeout
  while any(p.poll() is None for p in procs):
    if any(p.poll() not in (None, 0) for p in procs):
      deadline = min(deadline, time.monotonic() + 5.0)  # a grace period
    if time.monotonic() > deadline:
      for p in procs:
        if p.poll() is None:
          p.kill()
      break
    time.sleep(0.2)
  codes = [p.wait() for p in procs]
  for log in logs:
    log.seek(0)
    sys.stderr.write(log.read())
    log.close()
  return max(abs(c) for c in codes)


def _run_parser(p):
  p.add_argument("--process-id", type=int, default=0)
  p.add_argument("--num-processes", type=int, default=1)
  p.add_argument("--coordinator", default="localhost:12355",
                 help="host:port, or 'auto' on a cluster")
  p.add_argument("--local-devices", type=int, default=8)
  p.add_argument("--method", choices=["lawn", "fixnorm", "wrs"],
                 default="lawn")
  p.add_argument("--granularity", choices=["tensor", "unit"],
                 default="tensor")
  p.add_argument("--steps", type=int, default=12)
  p.add_argument("--free-steps", type=int, default=5)
  p.add_argument("--out", required=True)
  p.add_argument("--ckpt-dir", help="orbax checkpoints of params and state")
  p.add_argument("--save-at", type=int, nargs="*", default=[],
                 help="steps after which to checkpoint")
  p.add_argument("--resume", action="store_true",
                 help="continue from the latest checkpoint in --ckpt-dir")
  p.add_argument("--kill-at", type=int,
                 help="the last process SIGKILLs itself after this step")
  p.add_argument("--nan-at", type=int,
                 help="the last process's batch shard is NaN at this step "
                      "(the optimizer is wrapped in optax.apply_if_finite)")
  p.add_argument("--bad-mask-on-last", action="store_true",
                 help="the last process's mask misses a leaf")


def main(argv=None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  if argv and argv[0] == "launch":
    rest = argv[argv.index("--") + 1:] if "--" in argv else []
    own = argv[1:argv.index("--")] if "--" in argv else argv[1:]
    p = argparse.ArgumentParser(description="launch local processes")
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--local-devices", type=int, default=4)
    p.add_argument("--port", type=int, default=12355)
    p.add_argument("--timeout", type=float, default=300)
    return launch(p.parse_args(own), rest)
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  _run_parser(p)
  run(p.parse_args(argv[1:] if argv and argv[0] == "run" else argv))
  return 0


if __name__ == "__main__":
  sys.exit(main())
