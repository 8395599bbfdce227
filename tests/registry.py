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

    @property
    def function(self) -> Callable:
        return getattr(updates, self.name)

    def __str__(self) -> str:
        return self.name


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
    RuleCase("adadelta", {}, {**NEGATIVE_LR, **RHO, **NEGATIVE_EPS}),
    RuleCase("adam", ADAM_LIKE, {**NEGATIVE_LR, **BETAS, **NEGATIVE_EPS}),
    RuleCase("adamax", ADAM_LIKE, {**NEGATIVE_LR, **BETAS, **NEGATIVE_EPS}),
    RuleCase("amsgrad", ADAM_LIKE, {**NEGATIVE_LR, **BETAS, **NEGATIVE_EPS}),
]
