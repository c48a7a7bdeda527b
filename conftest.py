"""Repository-wide pytest setup."""

import os

# Notebooks run in their small mode under pytest (--nbmake); on Colab the
# variable is unset and the defaults apply.
os.environ.setdefault("LAWN_NOTEBOOK_SMALL", "1")
