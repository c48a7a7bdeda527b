"""Every public factory of a transformation is in the test registry (the
pattern of optax's contrib/_common_test.py), so the battery, the checkpoint
and the sharding checks reach it."""

import inspect

import lawn_optax as lo
from tests import registry


def _factories():
  for name in lo.__all__:
    obj = getattr(lo, name)
    if inspect.isfunction(obj):
      ret = str(inspect.signature(obj).return_annotation)
      if "GradientTransformation" in ret:
        yield name


def test_every_public_factory_is_registered_or_exempt():
  used = {u for m in registry.METHODS for u in m.uses}
  missing = sorted(set(_factories()) - used - set(registry.EXEMPT))
  assert not missing, f"register these in tests/registry.py: {missing}"
  assert sorted(_factories())  # the scan finds factories at all
  assert "lawn_adam" in set(_factories())


def test_registry_names_are_unique_and_uses_exist():
  names = [m.name for m in registry.METHODS]
  assert len(names) == len(set(names))
  for m in registry.METHODS:
    for u in m.uses:
      assert hasattr(lo, u), (m.name, u)
