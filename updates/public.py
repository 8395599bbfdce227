"""The face of a public function: keyword checks, partial application, shared docstrings.

:func:`checks_keywords` turns a misspelt keyword into a did-you-mean (torch's ``lr`` included);
:func:`awaits_loss_and_params` makes an optimizer called without ``loss_or_grads`` and ``params``
return itself with its hyperparameters bound (what ``pm.fit(obj_optimizer=...)`` wants);
:func:`update_rule` adds ``rule_for``, the :class:`~updates.engine.Rule` the arguments select;
:func:`shared_docstring` fills in the docstring text the rules share.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import string
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

__all__ = ["awaits_loss_and_params", "update_rule", "checks_keywords"]

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


def unknown_keyword(who: str, signature: inspect.Signature, kwargs: dict) -> TypeError | None:
    """The error for the first keyword of ``kwargs`` that ``signature`` does not take, if any."""
    parameters = signature.parameters
    if any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        return None
    keywords = [n for n, p in parameters.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
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
        decay). Infinities are left alone. Default False.\
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
    then only checks the hyperparameters) and returns itself with them bound, as a
    ``functools.partial`` awaiting ``(loss_or_grads, params)``; a misspelt keyword names the
    closest valid one. In the docstring, ``$parameters``, ``$clear_nan``, ``$returns`` and
    ``$betas`` become the text the rules share.
    """
    signature = inspect.signature(function)
    name = function.__name__

    @functools.wraps(function)
    def public(*args: Any, **kwargs: Any) -> Any:
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError as err:
            raise unknown_keyword(name, signature, kwargs) or TypeError(f"{name}: {err}") from None
        result = function(*args, **kwargs)
        bound.apply_defaults()
        hyper = {k: v for k, v in bound.arguments.items() if k not in ("loss_or_grads", "params")}
        if bound.arguments["loss_or_grads"] is None and bound.arguments["params"] is None:
            return functools.partial(public, **hyper)
        return result

    return shared_docstring(public)


def update_rule(function: Callable) -> Callable:
    """:func:`~updates.public.awaits_loss_and_params` for a rule whose body hands its
    :class:`~updates.engine.Rule` and hyperparameters to :func:`~updates.engine.apply_rule`;
    ``rule_for(**arguments)`` returns the ``Rule`` those arguments select."""
    public = awaits_loss_and_params(function)
    public.rule_for = lambda **arguments: function(**arguments)
    return public


def shared_docstring(function: Callable) -> Callable:
    """Put the text the rules share in ``function``'s docstring: ``$parameters``, ``$clear_nan``,
    ``$returns`` and ``$betas``."""
    function.__doc__ = string.Template(function.__doc__ or "").safe_substitute(
        parameters=_COMMON_PARAMETERS, clear_nan=_CLEAR_NAN, returns=_RETURNS, betas=_BETAS
    )
    return function
