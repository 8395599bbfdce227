"""The face of a public function: keyword checks, partial application, masks, shared docstrings.

:func:`checks_keywords` turns a misspelt keyword into a did-you-mean (torch's ``lr`` included);
:func:`awaits_loss_and_params` makes an optimizer called without ``loss_or_grads`` and ``params``
return itself with its hyperparameters bound (what ``pm.fit(obj_optimizer=...)`` wants), and
honours ``discard_loss``; :func:`awaits_input` does the same for a gradient transform or an update
wrapper called without its first argument (what :func:`~updates.chain` composes);
:func:`update_rule` adds ``rule_for``, the :class:`~updates.engine.Rule` the arguments select;
:func:`select` reads a ``mask=`` argument; :func:`shared_docstring` fills in the docstring text the
rules share.
"""

from __future__ import annotations

import difflib
import fnmatch
import functools
import inspect
import string
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np

from updates.checks import describe, label, which

__all__ = ["awaits_loss_and_params", "awaits_input", "update_rule", "checks_keywords", "select"]

F = TypeVar("F", bound=Callable)


#: The names torch.optim and optax give some hyperparameters.
ALIASES = {"lr": "learning_rate", "eps": "epsilon", "betas": "beta1", "b1": "beta1", "b2": "beta2"}


def suggestion(name: str, valid: Sequence[str]) -> str:
    """``"; did you mean 'learning_rate'?"`` for a misspelt keyword (or torch's ``lr``), or ``""``."""
    close = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.6)
    if not close and ALIASES.get(name) in valid:
        close = [ALIASES[name]]
    if not close:
        return ""
    if name == "betas" and "beta2" in valid:
        return "; did you mean 'beta1' and 'beta2'?"
    return f"; did you mean {close[0]!r}?"


def unknown_keyword(
    who: str, signature: inspect.Signature, kwargs: dict, extra: Sequence[str] = ()
) -> TypeError | None:
    """The error for the first keyword of ``kwargs`` that ``signature`` (or ``extra``) does not
    take, if any."""
    parameters = signature.parameters
    if any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        return None
    keywords = [n for n, p in parameters.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    keywords += list(extra)
    for name in kwargs:
        if name not in keywords:
            guess = suggestion(name, keywords)
            return TypeError(f"{who}: got an unexpected keyword argument {name!r}{guess}")
    return None


def checks_keywords(function: F) -> F:
    """Make ``function`` name the closest valid argument when called with a misspelt keyword."""
    signature = inspect.signature(function)
    keywords = set(signature.parameters)

    @functools.wraps(function)
    def checked(*args: Any, **kwargs: Any) -> Any:
        if not keywords.issuperset(kwargs):
            error = unknown_keyword(function.__name__, signature, kwargs)
            if error is not None:
                raise error
        return function(*args, **kwargs)

    return checked  # type: ignore[return-value]


_COMMON_PARAMETERS = """\
loss_or_grads : scalar TensorVariable or list of TensorVariable
        A scalar loss (differentiated once for all ``params``) or one gradient per parameter.
        Leave out both ``loss_or_grads`` and ``params`` to get the rule back as a callable
        awaiting them, with the hyperparameters bound (what ``pm.fit(obj_optimizer=...)`` wants).
    params : list of shared variables
        The floating-point parameters to update, each given once.\
"""


_CLEAR_NAN = """\
clear_nan : bool
        If true, NaN entries of the gradients are replaced by 0 before the rule sees them, so a
        NaN element acts exactly as a zero gradient (the parameter keeps its value there, moments
        decay). Infinities are left alone. Default False.
    discard_loss : bool
        Default True: return the updates. False: return ``(updates, loss)``, the loss as given
        (None when ``loss_or_grads`` is a list of gradients), as PyMC's learning-rate schedulers
        ask. Taken by every rule, also when partially applied, though not in its signature.\
"""


_BETAS = """\
beta1, beta2 : float or scalar tensor
        The decays of the moving averages of the gradient and of its square (or of its
        deviation, for AdaBelief), in [0, 1), defaults 0.9 and 0.999.\
"""


_RETURNS = """\
Updates
        An ``OrderedDict`` mapping the parameters, then the optimizer state, then the step
        counter (if the rule has one) to their new values; ``.params`` and ``.state`` tell them
        apart and ``.named_state()`` gives the state per parameter (``W.adam.m``).\
"""


def awaits_loss_and_params(function: Callable) -> Callable:
    """Give an optimizer's public function partial application and the docstring text rules share.

    Called without ``loss_or_grads`` and ``params``, the decorated function runs its body (which
    then only checks the hyperparameters) and returns itself with them all bound (the defaults
    too), as a ``functools.partial`` awaiting ``(loss_or_grads, params)``: its ``.func`` is the
    public function and its ``.keywords`` the hyperparameters, so that a caller may replace one
    (PyMC's schedulers put a shared variable in ``keywords["learning_rate"]``) and call
    ``functools.partial(rule.func, **keywords)``. A misspelt keyword names the closest valid one.

    Every call also takes ``discard_loss`` (not in the signature): False returns
    ``(updates, loss)``, the loss as given or None for a list of gradients. In the docstring,
    ``$parameters``, ``$clear_nan`` (which documents ``discard_loss`` too), ``$returns`` and
    ``$betas`` become the text the rules share.
    """
    signature = inspect.signature(function)
    name = function.__name__

    @functools.wraps(function)
    def public(*args: Any, **kwargs: Any) -> Any:
        discard = pop_discard_loss(name, kwargs)
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError as err:
            error = unknown_keyword(name, signature, kwargs, ("discard_loss",))
            raise error or TypeError(f"{name}: {err}") from None
        result = function(*args, **kwargs)
        bound.apply_defaults()
        hyper = {k: v for k, v in bound.arguments.items() if k not in ("loss_or_grads", "params")}
        loss_or_grads = bound.arguments["loss_or_grads"]
        if loss_or_grads is None and bound.arguments["params"] is None:
            return functools.partial(
                public, **hyper, **({} if discard is None else {"discard_loss": discard})
            )
        return with_loss(result, loss_or_grads, discard)

    public.awaits = "loss_or_grads"
    return shared_docstring(public)


def pop_discard_loss(who: str, kwargs: dict) -> bool | None:
    """Take ``discard_loss`` out of ``kwargs``: its value, checked, or None if not given."""
    if "discard_loss" not in kwargs:
        return None
    discard = kwargs.pop("discard_loss")
    if not isinstance(discard, (bool, np.bool_)):
        raise TypeError(f"{who}: discard_loss must be True or False, got {discard!r}")
    return bool(discard)


def with_loss(updates: Any, loss_or_grads: Any, discard: bool | None) -> Any:
    """``updates``, or ``(updates, loss)`` when ``discard`` is False: the loss as given, or None
    when ``loss_or_grads`` is a list of gradients (the ``discard_loss`` contract)."""
    if discard is None or discard:
        return updates
    return updates, None if isinstance(loss_or_grads, (list, tuple)) else loss_or_grads


#: The names of the first argument that make a callable a gradient transform or an update wrapper
#: (anything else taking ``(loss_or_grads, params)`` is a rule); see :func:`awaits_input`.
TRANSFORM_INPUTS = ("grads", "tensor_vars")
WRAPPER_INPUTS = ("updates",)


def awaits_input(function: F) -> F:
    """Give a gradient transform or an update wrapper partial application and did-you-mean.

    Called with its first argument (the gradients, the updates), the decorated function runs as
    written. Called without it, with keywords only, it returns itself awaiting it: a
    ``functools.partial`` of the public function with the given keywords and the defaults bound
    (``clip_by_global_norm(max_norm=1.0)``, ``apply_if_finite()``), what :func:`~updates.chain`
    composes. A required argument other than the first and ``params`` (which
    :func:`~updates.chain` supplies) must be given then; the values are checked when the part is
    applied. A misspelt keyword names the closest valid one either way.
    """
    signature = inspect.signature(function)
    name = function.__name__
    first = next(iter(signature.parameters))
    keywords = set(signature.parameters)
    required = [
        n
        for n, p in signature.parameters.items()
        if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]
    later = [n for n in required if n not in (first, "params")]

    @functools.wraps(function)
    def public(*args: Any, **kwargs: Any) -> Any:
        if not keywords.issuperset(kwargs):
            error = unknown_keyword(name, signature, kwargs)
            if error is not None:
                raise error
        if args or first in kwargs:
            return function(*args, **kwargs)
        missing = [n for n in later if n not in kwargs]
        if missing:
            raise TypeError(
                f"{name}: {', '.join(missing)} missing; called without {first}, {name} returns itself "
                f"awaiting them, with its other arguments bound: give {missing[0]}=..."
            )
        bound = signature.bind_partial(**kwargs)
        bound.apply_defaults()
        return functools.partial(public, **bound.arguments)

    public.awaits = first
    return shared_docstring(public)  # type: ignore[return-value]


_MASK = """\
mask : callable or list of bool or str, optional
        Which params this part applies to; the others pass through it unchanged. A callable
        ``mask(param) -> bool`` on each shared variable (``lambda p: p.ndim > 1``: matrices
        only), one boolean per param (``[True, False]``), or a name pattern matched against the
        whole name of each param with ``fnmatch.fnmatchcase`` (``"*.W"``, ``"layer[12].*"``;
        ``*`` any characters, ``?`` one, case-sensitive; an unnamed param is ``param<index>``).
        A mask that selects no param is an error. Default None: every param.\
"""


def select(who: str, mask: Any, count: int, params: Sequence[Any] | None = None) -> list[bool]:
    """Which of ``count`` entries (gradients or params) ``mask`` selects, one boolean each.

    ``mask`` is None (all), a list of ``count`` booleans, or, given the ``params`` the entries
    belong to, a callable on each param or a name pattern (``fnmatch.fnmatchcase`` on the
    whole name). Errors name ``who``: a wrong type or length, a callable that does not return a
    boolean, a pattern or callable without ``params``, and a mask that selects nothing.
    """
    if mask is None:
        return [True] * count
    if isinstance(mask, (list, tuple)):
        chosen = _mask_list(who, mask, count)
    elif isinstance(mask, str) or callable(mask):
        if params is None:
            raise TypeError(
                f"{who}: mask {_shown(mask)} selects by param, so it needs the params; give params=..."
            )
        chosen = [_mask_one(who, mask, param, i) for i, param in enumerate(params)]
    else:
        raise TypeError(
            f"{who}: mask must be a callable on each param, a list of booleans or a name pattern "
            f"(str), got {describe(mask)}"
        )
    if not any(chosen):
        names = ", ".join(repr(label(p, i)) for i, p in enumerate(params or []))
        among = f" ({names})" if names else ""
        raise ValueError(
            f"{who}: mask {_shown(mask)} selects none of the {count} params{among}; "
            "leave this part out instead"
        )
    return chosen


def _mask_list(who: str, mask: Sequence[Any], count: int) -> list[bool]:
    if len(mask) != count:
        raise ValueError(
            f"{who}: mask has {len(mask)} entries for {count} params; give one boolean per param"
        )
    for i, entry in enumerate(mask):
        if not isinstance(entry, (bool, np.bool_)):
            raise TypeError(f"{who}: mask[{i}] must be True or False, got {describe(entry)}")
    return [bool(entry) for entry in mask]


def _mask_one(who: str, mask: Any, param: Any, index: int) -> bool:
    if isinstance(mask, str):
        return fnmatch.fnmatchcase(label(param, index), mask)
    chosen = mask(param)
    if not isinstance(chosen, (bool, np.bool_)):
        raise TypeError(
            f"{who}: mask returned {describe(chosen)} for {which(param, index)}, expected True or False"
        )
    return bool(chosen)


def _shown(mask: Any) -> str:
    """A mask as an error message shows it: a pattern or list as written, a callable by name."""
    if isinstance(mask, (str, list, tuple)):
        return repr(mask)
    return getattr(mask, "__name__", type(mask).__name__)


def update_rule(function: Callable) -> Callable:
    """:func:`~updates.public.awaits_loss_and_params` for a rule whose body hands its
    :class:`~updates.engine.Rule` and hyperparameters to :func:`~updates.engine.apply_rule`;
    ``rule_for(**arguments)`` returns the ``Rule`` those arguments select."""
    public = awaits_loss_and_params(function)
    public.rule_for = lambda **arguments: function(**arguments)
    return public


def shared_docstring(function: Callable) -> Callable:
    """Put the text the public functions share in ``function``'s docstring: ``$parameters``,
    ``$clear_nan``, ``$returns``, ``$betas`` and ``$mask``."""
    function.__doc__ = string.Template(function.__doc__ or "").safe_substitute(
        parameters=_COMMON_PARAMETERS, clear_nan=_CLEAR_NAN, returns=_RETURNS, betas=_BETAS, mask=_MASK
    )
    return function
