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
    #: The rule updates matrices only (its ``fallback`` option takes the others): the tests of
    #: its own state and learning rate give it matrices where the others give vectors.
    matrices_only: bool = False

    @property
    def function(self) -> Callable:
        return getattr(updates, self.name)

    @property
    def rule(self):
        """The ``engine.Rule`` these options select."""
        return self.function.rule_for(**self.options)

    def __post_init__(self) -> None:
        object.__setattr__(self, "hyper", {**self.hyper, **self.options})

    def __str__(self) -> str:
        return self.variant or self.name


# Out-of-range values and the interval each message must state.
NEGATIVE_LR = {"learning_rate": (-0.1, r">= 0")}
NEGATIVE_EPS = {"epsilon": (-1e-8, r">= 0")}
BETAS = {"beta1": (1.0, r"in \[0, 1\)"), "beta2": (-0.5, r"in \[0, 1\)")}
RHO = {"rho": (1.0, r"in \[0, 1\)")}
MOMENTUM = {"momentum": (1.5, r"in \[0, 1\)")}
SCHEDULE_FREE_BAD = {
    "beta1": (0.0, r"in \(0, 1\]"),
    "warmup_steps": (-1, r">= 0"),
    "weight_lr_power": (-1.0, r">= 0"),
    "weight_decay": (-0.1, r">= 0"),
}

RULES = [
    RuleCase("sgd", {"learning_rate": 0.05}, NEGATIVE_LR),
    RuleCase("momentum", {"learning_rate": 0.02, "momentum": 0.8}, {**NEGATIVE_LR, **MOMENTUM}),
    RuleCase("nesterov_momentum", {"learning_rate": 0.02, "momentum": 0.8}, {**NEGATIVE_LR, **MOMENTUM}),
    RuleCase("adagrad", {"learning_rate": 0.1}, {**NEGATIVE_LR, **NEGATIVE_EPS}),
    RuleCase("rmsprop", {"learning_rate": 0.01}, {**NEGATIVE_LR, **RHO, **NEGATIVE_EPS}),
    RuleCase(
        "rmsprop",
        {"learning_rate": 0.01, "momentum": 0.5},
        {**MOMENTUM, "epsilon": (-1.0, r">= 0")},
        variant="rmsprop-centered-momentum",
        options={"centered": True},
    ),
    RuleCase("adadelta", {}, {**NEGATIVE_LR, **RHO, **NEGATIVE_EPS}),
    RuleCase("adam", ADAM_LIKE, {**NEGATIVE_LR, **BETAS, **NEGATIVE_EPS}),
    RuleCase("adamax", ADAM_LIKE, {**NEGATIVE_LR, **BETAS, **NEGATIVE_EPS}),
    RuleCase("amsgrad", ADAM_LIKE, {**NEGATIVE_LR, **BETAS, **NEGATIVE_EPS}),
    RuleCase("adamw", {**ADAM_LIKE, "weight_decay": 0.1}, {**BETAS, "weight_decay": (-1e-2, r">= 0")}),
    RuleCase("nadam", ADAM_LIKE, {**BETAS, "momentum_decay": (-1.0, r">= 0")}),
    RuleCase("radam", ADAM_LIKE, {**NEGATIVE_LR, **BETAS}),
    RuleCase("adabelief", ADAM_LIKE, {**BETAS, **NEGATIVE_EPS}),
    RuleCase("yogi", {"learning_rate": 0.05}, {**BETAS, **NEGATIVE_EPS}),
    RuleCase("lion", {"learning_rate": 0.01, "weight_decay": 0.1}, {**NEGATIVE_LR, **BETAS}),
    RuleCase("sign_sgd", {"learning_rate": 0.01}, NEGATIVE_LR),
    RuleCase("signum", {"learning_rate": 0.01, "beta": 0.8}, {**NEGATIVE_LR, "beta": (1.0, r"in \[0, 1\)")}),
    RuleCase(
        "rprop",
        {"learning_rate": 0.01},
        {"eta_minus": (1.0, r"in \(0, 1\)"), "eta_plus": (0.9, r"> 1")},
        not_live_lr="learning_rate is the initial step size only",
    ),
    RuleCase(
        "asgd",
        {"learning_rate": 0.05, "lambd": 0.5, "alpha": 0.6, "t0": 10.0, "weight_decay": 0.1},
        {**NEGATIVE_LR, "lambd": (-1e-4, r">= 0"), "t0": (-1.0, r">= 0"), "alpha": (-0.5, r">= 0")},
    ),
    RuleCase(
        "adopt",
        {"learning_rate": 0.05, "beta2": 0.99},
        {**NEGATIVE_LR, **BETAS, **NEGATIVE_EPS, "clip_exponent": (-0.25, r">= 0")},
    ),
    RuleCase(
        "adopt",
        {"learning_rate": 0.05, "beta1": 0.8, "beta2": 0.99, "epsilon": 1e-3},
        {"epsilon": (-1.0, r">= 0"), "clip_exponent": (-1.0, r">= 0")},
        variant="adopt-nesterov-unclipped",
        options={"use_clipping": False, "nesterov": True},
    ),
    RuleCase(
        "ademamix",
        {**ADAM_LIKE, "beta3": 0.99, "alpha": 2.0, "weight_decay": 0.1},
        {**NEGATIVE_LR, **BETAS, **NEGATIVE_EPS, "beta3": (1.0, r"in \[0, 1\)"), "alpha": (-1.0, r">= 0")},
    ),
    RuleCase(
        "adan",
        {**ADAM_LIKE, "beta1": 0.8, "beta3": 0.95, "epsilon_root": 1e-6, "weight_decay": 0.1},
        {
            **NEGATIVE_LR,
            **BETAS,
            **NEGATIVE_EPS,
            "beta3": (1.5, r"in \[0, 1\)"),
            "epsilon_root": (-1e-8, r">= 0"),
            "weight_decay": (-0.1, r">= 0"),
        },
    ),
    RuleCase(
        "novograd",
        {**ADAM_LIKE, "learning_rate": 0.01, "beta2": 0.5, "epsilon_root": 1e-6, "weight_decay": 0.1},
        {
            **NEGATIVE_LR,
            **BETAS,
            **NEGATIVE_EPS,
            "epsilon_root": (-1e-8, r">= 0"),
            "weight_decay": (-0.1, r">= 0"),
        },
    ),
    RuleCase(
        "fromage", {"learning_rate": 0.05, "min_norm": 1e-4}, {**NEGATIVE_LR, "min_norm": (-1e-6, r">= 0")}
    ),
    RuleCase(
        "optimistic_gradient_descent",
        {"learning_rate": 0.05, "alpha": 0.7, "beta": 0.4},
        {**NEGATIVE_LR, "alpha": (-1.0, r">= 0"), "beta": (-0.5, r">= 0")},
    ),
    RuleCase(
        "optimistic_adam",
        {**ADAM_LIKE, "optimism": 0.02, "epsilon_root": 1e-6},
        {**NEGATIVE_LR, **BETAS, **NEGATIVE_EPS, "optimism": (-0.1, r">= 0")},
    ),
    RuleCase(
        "optimistic_adam",
        {**ADAM_LIKE},
        {"epsilon_root": (-1e-8, r">= 0")},
        variant="optimistic_adam-plain",
        options={"nesterov": False},
    ),
    RuleCase(
        "madgrad",
        {"learning_rate": 0.05, "momentum": 0.8, "epsilon": 1e-4, "weight_decay": 0.1},
        {
            **NEGATIVE_LR,
            **MOMENTUM,
            "epsilon": (0.0, r"> 0"),
            "weight_decay": (-0.1, r">= 0"),
        },
        not_live_lr="its sums weigh gradients by (lr + eps) sqrt(t) (optax's): a learning rate of 0 moves",
    ),
    RuleCase(
        "simplified_ademamix",
        {**ADAM_LIKE, "learning_rate": 0.005, "alpha": 2.0, "epsilon_root": 1e-6, "weight_decay": 0.1},
        {
            **NEGATIVE_LR,
            **BETAS,
            **NEGATIVE_EPS,
            "alpha": (-1.0, r">= 0"),
            "epsilon_root": (-1e-8, r">= 0"),
            "weight_decay": (-0.1, r">= 0"),
        },
    ),
    RuleCase(
        "acprop",
        {**ADAM_LIKE, "learning_rate": 0.01, "epsilon": 1e-6, "epsilon_root": 1e-6, "weight_decay": 0.1},
        {
            **NEGATIVE_LR,
            **BETAS,
            **NEGATIVE_EPS,
            "epsilon_root": (-1e-8, r">= 0"),
            "weight_decay": (-0.1, r">= 0"),
        },
    ),
    RuleCase(
        "schedule_free_sgd",
        {"learning_rate": 0.05, "beta1": 0.8, "weight_decay": 0.1, "weight_lr_power": 1.0},
        {**NEGATIVE_LR, **SCHEDULE_FREE_BAD},
    ),
    RuleCase(
        "schedule_free_sgd",
        {"learning_rate": 0.05},
        {"beta1": (1.5, r"in \(0, 1\]")},
        variant="schedule_free_sgd-warmup",
        options={"warmup_steps": 5},  # an int: kept out of the float kinds of test_types_are_kept
    ),
    RuleCase(
        "schedule_free_adamw",
        {**ADAM_LIKE, "weight_decay": 0.1},
        {**NEGATIVE_LR, **SCHEDULE_FREE_BAD, **NEGATIVE_EPS, "beta2": (1.0, r"in \[0, 1\)")},
    ),
    RuleCase(
        "schedule_free_adamw",
        {**ADAM_LIKE, "beta1": 0.95, "weight_lr_power": 0.0},
        {"epsilon": (-1.0, r">= 0")},
        variant="schedule_free_adamw-warmup",
        options={"warmup_steps": 8},
    ),
    RuleCase(
        "prodigy",
        {"learning_rate": 1.0, "beta2": 0.99, "d0": 1e-2, "weight_decay": 0.1},
        {**NEGATIVE_LR, **BETAS, **NEGATIVE_EPS, "d0": (0.0, r"> 0"), "d_coef": (-1.0, r">= 0")},
        not_live_lr="a learning rate of 0 leaves s at 0, so d is 0/0 (as in optax): safeguard_warmup's case",
    ),
    RuleCase(
        "prodigy",
        {"learning_rate": 0.5, "beta3": 0.9, "d0": 1e-2, "d_coef": 0.5},
        {"beta3": (1.5, r"in \[0, 1\]"), "weight_decay": (-0.1, r">= 0")},
        variant="prodigy-safeguard_warmup",
        options={"safeguard_warmup": True},
    ),
    RuleCase(
        "dadapt_adamw",
        {"learning_rate": 1.0, "beta2": 0.99, "d0": 1e-2, "weight_decay": 0.1},
        {**NEGATIVE_LR, **BETAS, **NEGATIVE_EPS, "d0": (0.0, r"> 0"), "weight_decay": (-0.1, r">= 0")},
    ),
    RuleCase(
        "cocob",
        {"learning_rate": 0.5, "alpha": 20.0, "epsilon": 1e-4, "weight_decay": 0.1},
        {
            **NEGATIVE_LR,
            "alpha": (0.0, r"> 0"),
            "epsilon": (0.0, r"> 0"),
            "weight_decay": (-0.1, r">= 0"),
        },
    ),
    RuleCase(
        "dog",
        {"learning_rate": 0.5, "epsilon": 1e-6, "weight_decay": 0.1},
        {
            **NEGATIVE_LR,
            **NEGATIVE_EPS,
            "weight_decay": (-0.1, r">= 0"),
            "init_step": (("distance", 0.0), r"> 0"),
        },
        variant="dog-distance",
        options={"init_step": ("distance", 0.1)},
    ),
    RuleCase(
        "dog",
        {},
        {"init_step": (("heuristic", -1e-3), r"> 0")},
        variant="dog-heuristic",
        options={"init_step": ("heuristic", 1e-3)},
    ),
    RuleCase(
        "dog",
        {"epsilon": 1e-4},
        {"init_step": (("learning_rate", -0.1), r">= 0")},
        variant="dog-learning_rate",
        options={"init_step": ("learning_rate", 0.05)},
        not_live_lr="the distance starts at 0 and grows only as the params move: a first step 0 keeps it 0",
    ),
    RuleCase(
        "dowg",
        {"learning_rate": 0.5, "init_estim_sq_dist": 0.01, "epsilon": 1e-3, "weight_decay": 0.1},
        {
            **NEGATIVE_LR,
            "init_estim_sq_dist": (0.0, r"> 0"),
            "epsilon": (0.0, r"> 0"),
            "weight_decay": (-0.1, r">= 0"),
        },
    ),
    RuleCase("lamb", {"learning_rate": 0.01, "weight_decay": 0.01}, {**BETAS, **NEGATIVE_EPS}),
    RuleCase(
        "lars",
        {"learning_rate": 1.0, "momentum": 0.8, "weight_decay": 0.01, "trust_coefficient": 0.02},
        {**MOMENTUM, "trust_coefficient": (0.0, r"> 0")},
    ),
    RuleCase(
        "adafactor",
        {
            "learning_rate": 0.05,
            "epsilon1": 1e-3,
            "epsilon2": 0.1,
            "clip_threshold": 1.5,
            "weight_decay": 0.1,
        },
        {
            **NEGATIVE_LR,
            "beta2_decay": (0.5, r"<= 0"),
            "epsilon1": (-1e-3, r">= 0"),
            "epsilon2": (-1e-3, r">= 0"),
            "clip_threshold": (0.5, r">= 1"),
        },
    ),
    RuleCase(
        "adafactor",
        {"learning_rate": 0.03, "weight_decay": 0.01},
        {"weight_decay": (-0.1, r">= 0")},
        variant="adafactor-eps1_of_dtype",
    ),
    RuleCase("sm3", {"learning_rate": 0.05, "momentum": 0.8}, {**NEGATIVE_LR, **MOMENTUM}),
    RuleCase(
        "galore",
        {**ADAM_LIKE, "learning_rate": 0.05, "scale": 0.5, "weight_decay": 0.1},
        {**NEGATIVE_LR, **BETAS, **NEGATIVE_EPS, "weight_decay": (-0.1, r">= 0")},
        # rank 1 of matrices with 2 to 4 rows and columns, the projector refreshed every 3 steps
        options={"rank": 1, "update_proj_gap": 3},
    ),
    RuleCase(
        "muon",
        {"learning_rate": 0.02, "weight_decay": 0.1, "momentum": 0.9},
        {**NEGATIVE_LR, **MOMENTUM, **NEGATIVE_EPS, "weight_decay": (-0.1, r">= 0")},
        # The shared problems hold scalars and vectors too, which muon refuses: they go to the
        # fallback (its reference is tests/reference.py's momentum).
        options={"fallback": updates.momentum(learning_rate=0.02, momentum=0.8)},
        matrices_only=True,
    ),
    RuleCase(
        "muon",
        {"learning_rate": 0.02, "weight_decay": 0.1, "momentum": 0.9, "epsilon": 1e-8},
        {**NEGATIVE_LR, **MOMENTUM, **NEGATIVE_EPS},
        variant="muon-optax",
        # optax.contrib.muon's form: the scalars and vectors go to its built-in Adam
        options={"form": "optax"},
        matrices_only=True,
    ),
    RuleCase(
        "adagrad_window", {"learning_rate": 0.05}, {**NEGATIVE_LR, **NEGATIVE_EPS}, options={"n_win": 4}
    ),
    RuleCase("esgd", {"learning_rate": 0.05}, {**NEGATIVE_LR, **NEGATIVE_EPS}, needs_loss=True),
    RuleCase(
        "polyak_sgd",
        {"learning_rate": 0.8, "max_learning_rate": 0.05, "f_min": -1.0, "epsilon": 0.1},
        {**NEGATIVE_LR, **NEGATIVE_EPS, "max_learning_rate": (-0.1, r">= 0")},
        needs_loss=True,
    ),
    RuleCase(
        "momo",
        {"learning_rate": 0.5, "beta": 0.8, "lower_bound": -1.0, "weight_decay": 0.1},
        {**NEGATIVE_LR, "beta": (1.0, r"in \[0, 1\)"), "weight_decay": (-0.1, r">= 0")},
        needs_loss=True,
    ),
    RuleCase(
        "momo",
        {"learning_rate": 0.5, "lower_bound": -1.0},
        {"beta": (-0.1, r"in \[0, 1\)")},
        variant="momo-adapt_lower_bound",
        options={"adapt_lower_bound": True},
        needs_loss=True,
    ),
    RuleCase(
        "momo_adam",
        {**ADAM_LIKE, "lower_bound": -1.0, "weight_decay": 0.1},
        {**NEGATIVE_LR, **BETAS, **NEGATIVE_EPS, "weight_decay": (-0.1, r">= 0")},
        needs_loss=True,
    ),
    RuleCase(
        "momo_adam",
        {**ADAM_LIKE, "lower_bound": -1.0},
        {"epsilon": (-1.0, r">= 0")},
        variant="momo_adam-adapt_lower_bound",
        options={"adapt_lower_bound": True},
        needs_loss=True,
    ),
    RuleCase(
        "sophia",
        {"learning_rate": 0.05, "beta2": 0.9, "gamma": 0.5, "weight_decay": 0.1},
        {
            **NEGATIVE_LR,
            **BETAS,
            "epsilon": (0.0, r"> 0"),
            "gamma": (-0.1, r">= 0"),
            "clip_threshold": (0.0, r"> 0"),
            "weight_decay": (-0.1, r">= 0"),
        },
        options={"update_interval": 2, "seed": 3},  # ints: kept out of the float kinds of test_types_are_kept
        needs_loss=True,
    ),
]
#: The rules that take a list of gradients: most tests feed gradients as inputs.
GRADIENT_RULES = [case for case in RULES if not case.needs_loss]


# -- rules over a base rule (updates.meta) ---------------------------------------------------------


@dataclass(frozen=True)
class BaseRuleCase:
    """A rule over a base rule (``sam``, ``mechanize``): hyperparameters for its tests (the base
    rule among them, as ``rule=``) and out-of-range values with the interval each message states.

    These are not in ``RULES``: a ``RuleCase`` describes an ``engine.Rule`` (its slots, counter,
    ``rule_for``), while these compose a whole base rule; tests/test_meta.py runs the same
    properties over them (trajectories against tests/reference.py, float32 kept, state named and
    checkpointed, partial application and chain, ranges).
    """

    name: str
    hyper: dict = field(default_factory=dict)
    bad: dict = field(default_factory=dict)
    #: The rule needs the loss itself (SAM differentiates it at the perturbed params).
    needs_loss: bool = False
    #: The name and hyperparameters of the base rule in ``hyper["rule"]`` (a registry rule).
    base: tuple = ("sgd", {})

    @property
    def function(self) -> Callable:
        return getattr(updates, self.name)

    def __str__(self) -> str:
        return self.name


_SAM_BASE = ("momentum", {"learning_rate": 0.05, "momentum": 0.8})
_MECHANIZE_BASE = ("adam", {"learning_rate": 1.0, "beta1": 0.9, "beta2": 0.99})
BASE_RULE_CASES = [
    BaseRuleCase(
        "sam",
        {"rule": updates.momentum(**_SAM_BASE[1]), "rho": 0.1},
        {"rho": (-0.1, r">= 0")},
        needs_loss=True,
        base=_SAM_BASE,
    ),
    BaseRuleCase(
        "mechanize",
        {"rule": updates.adam(**_MECHANIZE_BASE[1]), "weight_decay": 0.05, "s_init": 1e-3, "num_betas": 4},
        {
            "weight_decay": (-0.1, r">= 0"),
            "epsilon": (-1e-8, r">= 0"),
            "s_init": (0.0, r"> 0"),
            "num_betas": (0, r"> 0"),
        },
        base=_MECHANIZE_BASE,
    ),
]


# -- update wrappers -------------------------------------------------------------------------------


@dataclass(frozen=True)
class WrapperCase:
    """A wrapper, how to apply it around a rule, and bad arguments with the message they raise.

    ``build(rule, grads, params)`` returns the wrapped updates, ``rule`` being a rule with its
    hyperparameters bound (``rule(grads, params) -> Updates``). ``bad`` maps a keyword argument
    to (bad value, exception type, regular expression of the message). ``wraps_rule``: the
    wrapper takes the rule itself (not its updates) as its first argument. ``keeps_state``: it
    creates state of its own (with the arguments of ``build``).
    """

    name: str
    build: Callable
    bad: dict = field(default_factory=dict)
    wraps_rule: bool = False
    keeps_state: bool = True

    @property
    def function(self) -> Callable:
        return getattr(updates, self.name)

    def __str__(self) -> str:
        return self.name


WRAPPERS = [
    WrapperCase(
        "apply_weight_decay",
        lambda rule, grads, params: updates.apply_weight_decay(
            rule(grads, params), weight_decay=0.1, learning_rate=0.5
        ),
        {
            "weight_decay": (
                -0.1,
                ValueError,
                r"^apply_weight_decay: weight_decay must be >= 0, got -0.1",
            ),
            "learning_rate": (
                "fast",
                TypeError,
                r"^apply_weight_decay: learning_rate must be a number or a scalar",
            ),
        },
        keeps_state=False,
    ),
    WrapperCase(
        "apply_if_finite",
        lambda rule, grads, params: updates.apply_if_finite(rule(grads, params), grads=grads),
        {
            "grads": ([object()], TypeError, r"^apply_if_finite: grads\[0\] must be a tensor, got object"),
            "max_norm": (-1.0, ValueError, r"^apply_if_finite: max_norm must be > 0 or None, got -1.0"),
            "budget": (0, ValueError, r"^apply_if_finite: budget must be > 0 or None, got 0"),
        },
    ),
    WrapperCase(
        "apply_lookahead",
        lambda rule, grads, params: updates.apply_lookahead(rule(grads, params), k=3, alpha=0.4),
        {
            "k": (0, ValueError, r"^apply_lookahead: k must be > 0, got 0"),
            "alpha": (1.5, ValueError, r"^apply_lookahead: alpha must be in \[0, 1\], got 1.5"),
        },
    ),
    WrapperCase(
        "apply_ema",
        lambda rule, grads, params: updates.apply_ema(rule(grads, params), decay=0.8),
        {"decay": (-0.2, ValueError, r"^apply_ema: decay must be in \[0, 1\], got -0.2")},
    ),
    WrapperCase(
        "accumulate_gradients",
        lambda rule, grads, params: updates.accumulate_gradients(rule, steps=3)(grads, params),
        {
            "steps": (2.0, TypeError, r"^accumulate_gradients: steps must be an integer, got float"),
            "rule": ("adam", TypeError, r"^accumulate_gradients: rule must be a callable"),
        },
        wraps_rule=True,
    ),
    WrapperCase(
        "apply_momentum",
        lambda rule, grads, params: updates.apply_momentum(rule(grads, params), momentum=0.7),
        {"momentum": (1.0, ValueError, r"^apply_momentum: momentum must be in \[0, 1\), got 1.0")},
    ),
    WrapperCase(
        "apply_nesterov_momentum",
        lambda rule, grads, params: updates.apply_nesterov_momentum(rule(grads, params), momentum=0.7),
        {"momentum": (-0.5, ValueError, r"^apply_nesterov_momentum: momentum must be in \[0, 1\), got -0.5")},
    ),
]
