import pytest


@pytest.fixture(autouse=True)
def _doctest_numpy(doctest_namespace):
  import numpy as np
  doctest_namespace["np"] = np


# Scripts run in their own processes (8 simulated devices, fresh restores).
collect_ignore = ["scripts"]
