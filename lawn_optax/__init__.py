"""lawn_optax: weight-norm training methods (LAWN and relatives) for optax.

Every method is an ``optax.GradientTransformationExtraArgs`` that composes with
``optax.chain``, ``masked``, ``MultiSteps``, ``inject_hyperparams`` and
``apply_if_finite``; masks built by :mod:`lawn_optax.masks` choose the layers.
"""

from lawn_optax import masks
from lawn_optax.diagnostics import frozen_norms, weight_norms
from lawn_optax.lawn import lawn, lawn_adam, lawn_lamb, lawn_sgd
from lawn_optax.projection import (
    NormConstraintState,
    TangentProjectionState,
    constrain_norms,
    norms,
    project_to_tangent,
)

__version__ = "0.1.0"

__all__ = [
    "NormConstraintState",
    "TangentProjectionState",
    "constrain_norms",
    "frozen_norms",
    "lawn",
    "lawn_adam",
    "lawn_lamb",
    "lawn_sgd",
    "masks",
    "norms",
    "project_to_tangent",
    "weight_norms",
]
