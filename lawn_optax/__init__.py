"""lawn_optax: weight-norm training methods (LAWN and relatives) for optax.

Every method is an ``optax.GradientTransformationExtraArgs`` that composes with
``optax.chain``, ``masked``, ``MultiSteps``, ``inject_hyperparams`` and
``apply_if_finite``; masks built by :mod:`lawn_optax.masks` choose the layers.
"""

from lawn_optax import autofreeze, masks, maxnorm
from lawn_optax.autofreeze import AutoFreeze, AutoFreezeState
from lawn_optax.curvature import (
    CurvatureEstimator,
    CurvatureLRState,
    HutchinsonState,
    SecantState,
    cblr,
    lars,
    mclr,
    paper_lars,
    scale_by_curvature_lr,
    scale_by_grad_weight_ratio,
    scale_by_hutchinson_curvature,
    scale_by_secant_curvature,
)
from lawn_optax.diagnostics import (
    NormReport,
    check_norms,
    frozen_at,
    frozen_norms,
    norms,
    weight_norms,
)
from lawn_optax.fixnorm import fixnorm, fixnorm_search
from lawn_optax.large_batch import (
    batch_size_schedule,
    small_loss_mean,
    small_loss_weights,
)
from lawn_optax.lawn import lawn, lawn_adam, lawn_lamb, lawn_sgd
from lawn_optax.maxnorm import max_norm
from lawn_optax.projection import (
    NormConstraintState,
    NormProjectionState,
    TangentProjectionState,
    constrain_norms,
    constrain_norms_after,
    project_norms,
    project_to_tangent,
)
from lawn_optax.wrs import rescale_batch_stats, weight_rescaling

__version__ = "0.3.0.dev0"

__all__ = [
    "AutoFreeze",
    "AutoFreezeState",
    "CurvatureEstimator",
    "CurvatureLRState",
    "HutchinsonState",
    "NormConstraintState",
    "NormProjectionState",
    "NormReport",
    "SecantState",
    "TangentProjectionState",
    "autofreeze",
    "batch_size_schedule",
    "cblr",
    "check_norms",
    "constrain_norms",
    "constrain_norms_after",
    "fixnorm",
    "fixnorm_search",
    "frozen_at",
    "frozen_norms",
    "lars",
    "lawn",
    "lawn_adam",
    "lawn_lamb",
    "lawn_sgd",
    "masks",
    "max_norm",
    "maxnorm",
    "mclr",
    "norms",
    "paper_lars",
    "project_norms",
    "project_to_tangent",
    "rescale_batch_stats",
    "scale_by_curvature_lr",
    "scale_by_grad_weight_ratio",
    "scale_by_hutchinson_curvature",
    "scale_by_secant_curvature",
    "small_loss_mean",
    "small_loss_weights",
    "weight_norms",
    "weight_rescaling",
]
