"""updates: optimizer update rules for PyTensor, Lasagne-compatible.

Each rule takes a scalar loss or a list of gradients and a list of shared variables, and returns an
ordered dictionary ``{shared variable: new value}`` to pass to ``pytensor.function(updates=...)``.
"""

from updates.constraints import norm_constraint, total_norm_constraint
from updates.core import Updates, per_parameter
from updates.grads import get_or_compute_grads
from updates.momentum import apply_momentum, apply_nesterov_momentum, momentum, nesterov_momentum
from updates.rules import adadelta, adagrad, adam, adamax, amsgrad, rmsprop, sgd

__version__ = "0.1.0"

__all__ = [
    "Updates",
    "per_parameter",
    "get_or_compute_grads",
    "sgd",
    "momentum",
    "nesterov_momentum",
    "apply_momentum",
    "apply_nesterov_momentum",
    "adagrad",
    "rmsprop",
    "adadelta",
    "adam",
    "adamax",
    "amsgrad",
    "norm_constraint",
    "total_norm_constraint",
]
