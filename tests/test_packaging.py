"""Packaging: the wheel holds only the library, the core imports neither
flax nor chex, and the version is the package's."""

import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import lawn_optax as lo

ROOT = Path(__file__).resolve().parents[1]

CORE_STEP = """
import sys
import jax.numpy as jnp, optax
import lawn_optax as lo
params = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}
tx = lo.lawn_adam(1e-2, free_steps=1, mask={"w": True, "b": False})
state = tx.init(params)
for _ in range(3):
  u, state = tx.update({"w": jnp.ones((3, 2)), "b": jnp.ones(2)}, state, params)
  params = optax.apply_updates(params, u)
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("flax", "chex"))
assert not loaded, loaded
print("core ok", float(jnp.linalg.norm(params["w"])))
"""


def test_core_imports_neither_flax_nor_chex():
  out = subprocess.run([sys.executable, "-c", CORE_STEP], capture_output=True,
                       text=True, cwd="/", check=False)
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.startswith("core ok")


def test_wheel_holds_only_the_library(tmp_path):
  subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                  "--no-build-isolation", "-w", str(tmp_path), str(ROOT)],
                 check=True, capture_output=True)
  (wheel,) = tmp_path.glob("lawn_optax-*.whl")
  tops = {n.split("/")[0] for n in zipfile.ZipFile(wheel).namelist()}
  assert tops == {"lawn_optax", f"lawn_optax-{lo.__version__}.dist-info"}
  assert "lawn_optax/py.typed" in zipfile.ZipFile(wheel).namelist()


def test_version_is_the_installed_one():
  assert metadata.version("lawn_optax") == lo.__version__
