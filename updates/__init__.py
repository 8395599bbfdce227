"""updates: optimizer update rules for PyTensor, Lasagne-compatible.

Each rule takes a scalar loss or a list of gradients and a list of shared variables, and returns an
ordered dictionary ``{shared variable: new value}`` to pass to ``pytensor.function(updates=...)``.
"""

from updates import backends
from updates.chain import chain
from updates.checks import ArgumentError
from updates.constraints import norm_constraint, total_norm_constraint
from updates.container import Updates
from updates.engine import per_parameter
from updates.factored import adafactor, sm3
from updates.grads import get_or_compute_grads
from updates.lbfgs import lbfgs
from updates.meta import mechanize, sam
from updates.modern import (
    acprop,
    adabelief,
    adagrad_window,
    adamw,
    adan,
    ademamix,
    adopt,
    asgd,
    esgd,
    lamb,
    lars,
    lion,
    madgrad,
    nadam,
    polyak_sgd,
    radam,
    rprop,
    sign_sgd,
    signum,
    simplified_ademamix,
    yogi,
)
from updates.momentum import apply_momentum, apply_nesterov_momentum, momentum, nesterov_momentum
from updates.momo import momo, momo_adam
from updates.normalized import fromage, novograd, optimistic_adam, optimistic_gradient_descent
from updates.orthogonal import muon
from updates.parameter_free import cocob, dadapt_adamw, dog, dowg
from updates.private import differentially_private_aggregate, dpsgd
from updates.prodigy import prodigy
from updates.projected import galore
from updates.rules import adadelta, adagrad, adam, adamax, amsgrad, rmsprop, sgd
from updates.schedule_free import schedule_free_adamw, schedule_free_sgd
from updates.schedules import (
    constant,
    cosine_decay,
    exponential_decay,
    inverse_time_decay,
    join_schedules,
    linear_decay,
    linear_warmup,
    live,
    momentum_ramp,
    noam,
    one_cycle,
    piecewise_constant,
    polynomial_decay,
    reduce_on_plateau,
    scale,
    sgdr,
    step_decay,
    warmup_cosine,
)
from updates.sophia import sophia
from updates.state import HyperparameterWarning, inspect_state, load_state, reset_state, save_state
from updates.step import Step, compile_step
from updates.train import History, NonFiniteLossError, Record, iterate, minimize
from updates.transforms import (
    adaptive_grad_clip,
    add_gradient_noise,
    add_weight_decay,
    centralize,
    clip_by_block_rms,
    clip_by_global_norm,
    clip_by_norm,
    clip_by_value,
    normalize_by_update_norm,
    zero_nans,
)
from updates.wrappers import (
    SkipBudgetError,
    accumulate_gradients,
    apply_ema,
    apply_if_finite,
    apply_lookahead,
    apply_weight_decay,
    merge_updates,
    swap_averages,
)

backends.register()  # how each PyTensor linker runs the multi-tensor step

__version__ = "0.1.0"

__all__ = [
    "Updates",
    "per_parameter",
    "get_or_compute_grads",
    "ArgumentError",
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
    "adamw",
    "nadam",
    "radam",
    "adabelief",
    "yogi",
    "lion",
    "sign_sgd",
    "signum",
    "rprop",
    "asgd",
    "adopt",
    "ademamix",
    "adan",
    "simplified_ademamix",
    "madgrad",
    "polyak_sgd",
    "momo",
    "momo_adam",
    "acprop",
    "schedule_free_sgd",
    "schedule_free_adamw",
    "prodigy",
    "dadapt_adamw",
    "cocob",
    "dog",
    "dowg",
    "novograd",
    "fromage",
    "optimistic_gradient_descent",
    "optimistic_adam",
    "lamb",
    "lars",
    "adafactor",
    "sm3",
    "galore",
    "muon",
    "dpsgd",
    "differentially_private_aggregate",
    "adagrad_window",
    "esgd",
    "sophia",
    "lbfgs",
    "norm_constraint",
    "total_norm_constraint",
    "clip_by_value",
    "clip_by_norm",
    "clip_by_global_norm",
    "centralize",
    "adaptive_grad_clip",
    "clip_by_block_rms",
    "normalize_by_update_norm",
    "add_weight_decay",
    "zero_nans",
    "add_gradient_noise",
    "apply_weight_decay",
    "apply_if_finite",
    "apply_lookahead",
    "apply_ema",
    "swap_averages",
    "accumulate_gradients",
    "sam",
    "mechanize",
    "merge_updates",
    "chain",
    "inspect_state",
    "save_state",
    "load_state",
    "HyperparameterWarning",
    "reset_state",
    "constant",
    "piecewise_constant",
    "exponential_decay",
    "inverse_time_decay",
    "polynomial_decay",
    "linear_decay",
    "step_decay",
    "cosine_decay",
    "linear_warmup",
    "warmup_cosine",
    "one_cycle",
    "sgdr",
    "noam",
    "momentum_ramp",
    "join_schedules",
    "scale",
    "reduce_on_plateau",
    "live",
    "compile_step",
    "Step",
    "iterate",
    "minimize",
    "History",
    "Record",
    "NonFiniteLossError",
    "SkipBudgetError",
]
