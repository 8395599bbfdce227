"""One record per update rule: what every cross-cutting test runs over.

A new rule joins every test by adding a record here (and its NumPy reference to reference.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import updates

ADAM_LIKE = {"learning_rate": 0.05, "beta1": 0.9, "beta2": 0.99}


@dataclass(frozen=True)
class RuleCase:
    """A rule, the hyperparameters its trajectory tests use, and out-of-range values to reject."""

    name: str
    hyper: dict = field(default_factory=dict)
    bad: dict = field(default_factory=dict)
    #: A variant's test id (``rmsprop-centered``); the rule's name by default.
    variant: str = ""
    #: Structural arguments the variant always passes (``centered=True``), part of ``hyper`` too.
    options: dict = field(default_factory=dict)
    #: Why a learning rate set to 0 and raised later does not act as a plain scale, if so.
    not_live_lr: str = ""
    #: The rule needs the loss itself (not only gradients), e.g. for Hessian-vector products.
    needs_loss: bool = False

    @property
    def function(self) -> Callable:
        return getattr(updates, self.name)

    @property
    def rule(self):
        """The ``core.Rule`` these options select."""
        return self.function.rule_for(**self.options)

    def __post_init__(self) -> None:
        object.__setattr__(self, "hyper", {**self.hyper, **self.options})

    def __str__(self) -> str:
        return self.variant or self.name


# Out-of-range values and the interval each message must state.
NEGATIVE_LR = {"learning_rate": (-0.1, r"\[0, inf\)")}
NEGATIVE_EPS = {"epsilon": (-1e-8, r"\[0, inf\)")}
BETAS = {"beta1": (1.0, r"\[0, 1\)"), "beta2": (-0.5, r"\[0, 1\)")}
RHO = {"rho": (1.0, r"\[0, 1\)")}
MOMENTUM = {"momentum": (1.5, r"\[0, 1\)")}

RULES = [
    RuleCase("sgd", {"learning_rate": 0.05}, NEGATIVE_LR),
    RuleCase("momentum", {"learning_rate": 0.02, "momentum": 0.8}, {**NEGATIVE_LR, **MOMENTUM}),
    RuleCase("nesterov_momentum", {"learning_rate": 0.02, "momentum": 0.8}, {**NEGATIVE_LR, **MOMENTUM}),
    RuleCase("adagrad", {"learning_rate": 0.1}, {**NEGATIVE_LR, **NEGATIVE_EPS}),
    RuleCase("rmsprop", {"learning_rate": 0.01}, {**NEGATIVE_LR, **RHO, **NEGATIVE_EPS}),
    RuleCase(
        "rmsprop",
        {"learning_rate": 0.01, "momentum": 0.5},
        {**MOMENTUM, "epsilon": (-1.0, r"\[0, inf\)")},
        variant="rmsprop-centered-momentum",
        options={"centered": True},
    ),
    RuleCase("adadelta", {}, {**NEGATIVE_LR, **RHO, **NEGATIVE_EPS}),
    RuleCase("adam", ADAM_LIKE, {**NEGATIVE_LR, **BETAS, **NEGATIVE_EPS}),
    RuleCase("adamax", ADAM_LIKE, {**NEGATIVE_LR, **BETAS, **NEGATIVE_EPS}),
    RuleCase("amsgrad", ADAM_LIKE, {**NEGATIVE_LR, **BETAS, **NEGATIVE_EPS}),
    RuleCase("adamw", {**ADAM_LIKE, "weight_decay": 0.1}, {**BETAS, "weight_decay": (-1e-2, r"\[0, inf\)")}),
    RuleCase("nadam", ADAM_LIKE, {**BETAS, "momentum_decay": (-1.0, r"\[0, inf\)")}),
    RuleCase("radam", ADAM_LIKE, {**NEGATIVE_LR, **BETAS}),
    RuleCase("adabelief", ADAM_LIKE, {**BETAS, **NEGATIVE_EPS}),
    RuleCase("yogi", {"learning_rate": 0.05}, {**BETAS, **NEGATIVE_EPS}),
    RuleCase("lion", {"learning_rate": 0.01, "weight_decay": 0.1}, {**NEGATIVE_LR, **BETAS}),
    RuleCase(
        "rprop",
        {"learning_rate": 0.01},
        {"eta_minus": (1.0, r"\(0, 1\)"), "eta_plus": (0.9, r"\(1, inf\)")},
        not_live_lr="learning_rate is the initial step size only",
    ),
    RuleCase("lamb", {"learning_rate": 0.01, "weight_decay": 0.01}, {**BETAS, **NEGATIVE_EPS}),
    RuleCase(
        "lars",
        {"learning_rate": 1.0, "momentum": 0.8, "weight_decay": 0.01, "trust_coefficient": 0.02},
        {**MOMENTUM, "trust_coefficient": (0.0, r"\(0, inf\)")},
    ),
    RuleCase(
        "adagrad_window", {"learning_rate": 0.05}, {**NEGATIVE_LR, **NEGATIVE_EPS}, options={"n_win": 4}
    ),
    RuleCase("esgd", {"learning_rate": 0.05}, {**NEGATIVE_LR, **NEGATIVE_EPS}, needs_loss=True),
]
#: The rules that take a list of gradients: most tests feed gradients as inputs.
GRADIENT_RULES = [case for case in RULES if not case.needs_loss]
