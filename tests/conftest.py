import pytest


@pytest.fixture(autouse=True)
def _doctest_numpy(doctest_namespace):
  import numpy as np
  doctest_namespace["np"] = np
