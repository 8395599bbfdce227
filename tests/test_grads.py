"""The gradient gate: bad input raises while the graph is built, with a message that starts with
the rule's name and names the argument, the value given and what was expected."""

import re

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from registry import RULES as ALL_RULES

import updates

# Every rule (and get_or_compute_grads) goes through the same gate; the prefix must be its own name.
GATED = [updates.sgd, updates.adam, updates.adadelta, updates.get_or_compute_grads]
RULES = GATED[:-1]


def shared(name, value=(1.0, 2.0, 3.0), dtype="float64", **kwargs):
    return pytensor.shared(np.asarray(value, dtype=dtype), name=name, **kwargs)


def raises(error, who, message):
    """``pytest.raises`` for a message that starts with ``who: `` followed by ``message`` (a regex)."""
    return pytest.raises(error, match=f"^{re.escape(who.__name__)}: {message}")


@pytest.fixture
def w():
    return shared("w")


@pytest.mark.parametrize("rule", GATED)
def test_loss_must_be_scalar(rule, w):
    with raises(ValueError, rule, r"the loss must be a scalar, got a 1-d tensor .*\.sum\(\)"):
        rule(w**2, [w])


@pytest.mark.parametrize("rule", GATED)
def test_param_must_be_shared(rule, w):
    x = pt.vector("W_out")
    with raises(
        TypeError,
        rule,
        r"params\[1\] \('W_out'\) is a TensorVariable .*expected a shared variable; "
        r"wrap it with pytensor\.shared",
    ):
        rule((w**2).sum() + x.sum(), [w, x])


@pytest.mark.parametrize("rule", GATED)
def test_params_must_be_a_list(rule, w):
    with raises(TypeError, rule, "params must be a list of shared variables, got TensorSharedVariable"):
        rule((w**2).sum(), w)


@pytest.mark.parametrize("rule", GATED)
def test_params_must_not_be_empty(rule, w):
    with raises(ValueError, rule, "params is empty; give at least one shared variable"):
        rule((w**2).sum(), [])


@pytest.mark.parametrize("rule", GATED)
def test_params_must_be_distinct(rule, w):
    b = shared("b")
    with raises(ValueError, rule, r"params\[2\] \('w'\) is the same variable as params\[0\]"):
        rule((w**2).sum() + b.sum(), [w, b, w])


@pytest.mark.parametrize("rule", RULES)
def test_param_must_be_floating_point(rule, w):
    n = shared("n", dtype="int64")
    with raises(TypeError, rule, r"params\[1\] \('n'\) has dtype int64, expected a floating-point dtype"):
        rule([w, n], [w, n])


@pytest.mark.parametrize("rule", GATED)
def test_grads_and_params_same_length(rule, w):
    with raises(ValueError, rule, "got 2 gradients for 1 params"):
        rule([w, w], [w])


@pytest.mark.parametrize("rule", GATED)
@pytest.mark.parametrize(
    "grad",
    [pt.zeros((4,)), pt.zeros((3, 3))],
    ids=["static_shape_differs", "ndim_differs"],
)
def test_grad_shape_must_match_param(rule, grad):
    w = shared("w", shape=(3,))
    with raises(
        ValueError,
        rule,
        rf"the gradient loss_or_grads\[0\] has type {re.escape(str(grad.type))}, which cannot match "
        r"params\[0\] \('w'\) of type Vector\(float64, shape=\(3,\)\)",
    ):
        rule([grad], [w])


def unshaped_w():
    """A shared variable whose type knows no shape (the usual kind), of value shape (20, 32)."""
    return shared("W", value=np.zeros((20, 32)))


# The through-grads entry points that are not rules: each checks the gradients against the params.
TAKE_GRADS = {
    "accumulate_gradients": lambda grads, params: updates.accumulate_gradients(updates.sgd())(grads, params),
    "add_weight_decay": lambda grads, params: updates.add_weight_decay(grads, params, weight_decay=0.1),
}


def _gradient_takers():
    return [(rule.__name__, rule) for rule in GATED] + list(TAKE_GRADS.items())


@pytest.mark.parametrize(("who", "take"), _gradient_takers(), ids=[n for n, _ in _gradient_takers()])
@pytest.mark.parametrize(
    ("grad", "shown"),
    [(pt.ones((3, 3)), r"\(3, 3\)"), (pt.specify_shape(pt.matrix(), (None, 3)), r"\(None, 3\)")],
    ids=["all_known", "one_known"],
)
def test_grad_static_shape_must_match_the_param_value(who, take, grad, shown):
    w = unshaped_w()
    assert w.type.shape == (None, None)  # the type check alone lets any matrix through
    with pytest.raises(
        ValueError,
        match=rf"^{who}: the gradient loss_or_grads\[1\] has static shape {shown}, which does not "
        r"match the shape \(20, 32\) of the value of params\[1\] \('W'\)$",
    ):
        take([pt.vector("g"), grad], [shared("b"), w])


@pytest.mark.parametrize(("who", "take"), _gradient_takers(), ids=[n for n, _ in _gradient_takers()])
@pytest.mark.parametrize("known", [(None, None), (None, 32), (20, 32)], ids=str)
def test_grad_shape_unknown_or_matching_is_accepted(who, take, known):
    w, g = unshaped_w(), pt.matrix("g")
    result = take([pt.specify_shape(g, known)], [w])
    new = result[w] if isinstance(result, dict) else result[0]
    value = pytensor.function([g], new, mode="FAST_COMPILE")(np.full((20, 32), 2.0))
    assert value.shape == (20, 32)


@pytest.mark.parametrize("rule", GATED)
def test_grad_must_be_floating_point(rule, w):
    with raises(
        TypeError,
        rule,
        r"the gradient loss_or_grads\[0\] has dtype int32, expected a floating-point dtype "
        r"like params\[0\] \('w'\) \(float64\)",
    ):
        rule([pt.ivector()], [w])


@pytest.mark.parametrize("rule", GATED)
def test_loss_must_depend_on_every_param(rule, w):
    b = shared("b")
    with raises(ValueError, rule, r"the loss does not depend on params\[1\] \('b'\)"):
        rule((w**2).sum(), [w, b])


@pytest.mark.parametrize("rule", GATED)
@pytest.mark.parametrize("missing", ["loss_or_grads", "params"])
def test_loss_and_params_given_together(rule, missing, w):
    given = {"loss_or_grads": (w**2).sum(), "params": [w]}
    given[missing] = None
    with raises(TypeError, rule, f"{missing} is missing; give both loss_or_grads and params"):
        rule(**given)


@pytest.mark.parametrize("rule", RULES)
def test_symbolic_hyperparameter_must_be_scalar(rule, w):
    with raises(
        TypeError, rule, r"learning_rate must be a number or a scalar \(0-d\) tensor, got TensorVariable"
    ):
        rule((w**2).sum(), [w], learning_rate=pt.vector("lr"))


@pytest.mark.parametrize("rule", RULES)
def test_clear_nan_must_be_bool(rule, w):
    with raises(TypeError, rule, "clear_nan must be True or False, got 1"):
        rule((w**2).sum(), [w], clear_nan=1)


@pytest.mark.parametrize("rule", RULES)
def test_unknown_keyword(rule, w):
    with raises(TypeError, rule, "got an unexpected keyword argument 'lr'"):
        rule((w**2).sum(), [w], lr=0.1)


@pytest.mark.parametrize(
    ("misspelt", "meant"),
    [("learnign_rate", "learning_rate"), ("lr", "learning_rate"), ("clearnan", "clear_nan")],
)
@pytest.mark.parametrize("rule", RULES)
def test_misspelt_keyword_names_the_closest(rule, misspelt, meant, w):
    with raises(
        TypeError, rule, f"got an unexpected keyword argument '{misspelt}'; did you mean '{meant}'\\?$"
    ):
        rule((w**2).sum(), [w], **{misspelt: 0.1})
    with raises(TypeError, rule, f"got an unexpected keyword argument '{misspelt}'; did you mean '{meant}'"):
        rule(**{misspelt: 0.1})  # partial application too


def test_keyword_far_from_any_gets_no_guess(w):
    with raises(TypeError, updates.adam, "got an unexpected keyword argument 'colour'$"):
        updates.adam((w**2).sum(), [w], colour=1)


# -- what the gate returns -------------------------------------------------------------------------


def test_a_list_of_gradients_comes_back_as_the_same_object(w):
    grads = [2 * w]
    assert updates.get_or_compute_grads(grads, [w]) is grads


def test_integer_shared_variables_are_differentiated():
    """Lasagne's own test: get_or_compute_grads(A + B, [A, B]) for integer A and B."""
    a, b = pytensor.shared(1), pytensor.shared(1)
    grads = updates.get_or_compute_grads(a + b, [a, b])
    expected = pytensor.grad(a + b, [a, b])
    assert [g.type for g in grads] == [e.type for e in expected]
    assert [float(g.eval(mode="FAST_COMPILE")) for g in grads] == [0.0, 0.0]


def test_one_grad_per_param_with_its_dtype():
    w, b = shared("w", dtype="float32"), shared("b", value=[[1.0, -2.0]])
    with pytensor.config.change_flags(floatX="float64"):
        grads = updates.get_or_compute_grads((w**2).sum() + (b**3).sum(), [w, b])
    assert [g.dtype for g in grads] == ["float32", "float64"]
    np.testing.assert_allclose(grads[0].eval(mode="FAST_COMPILE"), 2 * w.get_value())
    np.testing.assert_allclose(grads[1].eval(mode="FAST_COMPILE"), 3 * b.get_value() ** 2)


@pytest.mark.parametrize("rule", RULES)
def test_float64_grad_is_cast_to_float32_param(rule):
    w = shared("w", dtype="float32")
    with pytensor.config.change_flags(floatX="float64"):
        result = rule([pt.constant(np.array([0.5, -1.0, 2.0]))], [w])
        assert all(value.dtype == key.dtype for key, value in result.items())
        pytensor.function([], [], updates=result, mode="FAST_COMPILE")()
    assert w.get_value().dtype == np.float32
    assert not np.array_equal(w.get_value(), [1.0, 2.0, 3.0])


@pytest.mark.parametrize("rule", RULES)
def test_loss_is_differentiated_once(rule, monkeypatch):
    """One pytensor.grad call for all params, giving the same step as the grads passed explicitly."""
    params = [shared("w"), shared("b", value=[[0.5, -1.5]])]
    loss = (params[0] ** 2).sum() * params[1].sum() ** 2
    explicit = rule(pytensor.grad(loss, params), params)
    calls, grad = [], pytensor.grad

    def counting_grad(cost, wrt, *args, **kwargs):
        calls.append(list(wrt))
        return grad(cost, wrt, *args, **kwargs)

    monkeypatch.setattr(pytensor, "grad", counting_grad)
    from_loss = rule(loss, params)
    assert calls == [params]

    outputs = [[result[p] for p in params] for result in (explicit, from_loss)]
    step = pytensor.function([], outputs[0] + outputs[1], mode="FAST_COMPILE")
    values = step()
    for a, b in zip(values[:2], values[2:]):
        np.testing.assert_array_equal(a, b)


# -- drop-in for code written against Lasagne and PyMC, which catch ValueError ---------------------

NOT_SHARED = {
    "symbolic": lambda: pt.vector("x"),
    "ndarray": lambda: np.ones(3),
    "number": lambda: 1.0,
}


def _through_wrappers(x, w):
    """Each entry point that takes params, called with ``x`` among them."""
    base = updates.sgd([pt.vector("g")], [w])
    return {
        "get_or_compute_grads": lambda: updates.get_or_compute_grads([pt.vector("g")] * 2, [w, x]),
        "apply_momentum": lambda: updates.apply_momentum(base, [w, x]),
        "apply_nesterov_momentum": lambda: updates.apply_nesterov_momentum(base, [w, x]),
        "apply_weight_decay": lambda: updates.apply_weight_decay(base, [w, x]),
        "apply_lookahead": lambda: updates.apply_lookahead(base, [w, x]),
        "apply_ema": lambda: updates.apply_ema(base, [w, x]),
        "accumulate_gradients": lambda: updates.accumulate_gradients(updates.sgd())(
            [pt.vector("g")] * 2, [w, x]
        ),
        "add_weight_decay": lambda: updates.add_weight_decay([pt.vector("g")] * 2, [w, x]),
    }


@pytest.mark.parametrize("kind", NOT_SHARED)
@pytest.mark.parametrize("case", ALL_RULES, ids=str)
def test_a_param_not_shared_is_a_value_error_too(case, kind, w):
    for error in (ValueError, TypeError, updates.ArgumentError):
        with pytest.raises(error, match=rf"^{case.name}: params\[1\] .* expected a shared variable"):
            case.function([pt.vector("g")] * 2, [w, NOT_SHARED[kind]()], **case.options)


@pytest.mark.parametrize("kind", NOT_SHARED)
@pytest.mark.parametrize(
    "entry",
    [
        "get_or_compute_grads",
        "apply_momentum",
        "apply_nesterov_momentum",
        "apply_weight_decay",
        "apply_lookahead",
        "apply_ema",
        "accumulate_gradients",
        "add_weight_decay",
    ],
)
def test_wrappers_and_transforms_refuse_a_param_not_shared_with_a_value_error(entry, kind, w):
    call = _through_wrappers(NOT_SHARED[kind](), w)[entry]
    with pytest.raises(ValueError, match=rf"^{entry}: params\[1\] .* expected a shared variable"):
        call()
    assert issubclass(updates.ArgumentError, TypeError)


# The structure of PyMC's own test of its optimizers (tests/variational/test_updates.py).
_a = pytensor.shared(1.0)
_b = _a * 2
_m = pytensor.shared(np.empty((10,), pytensor.config.floatX))
_m2 = pytensor.shared(np.empty((10, 10, 10), pytensor.config.floatX))
LOSSES = {
    "scalar": (_b, [_a]),
    "vector": (_m.sum(), [_m]),
    "mixed": (_b + _m.sum() + _m2.sum(), [_a, _m, _m2]),
}
GETTERS = {
    "both": lambda t: t,
    "no loss": lambda t: (None, t[1]),
    "no params": lambda t: (t[0], None),
    "neither": lambda t: (None, None),
}


@pytest.mark.parametrize("getter", GETTERS)
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("case", ALL_RULES, ids=str)
def test_the_call_patterns_pymc_tests(case, loss, getter):
    given, params = GETTERS[getter](LOSSES[loss])
    kwargs = {**case.hyper, "loss_or_grads": given, "params": params}
    if given is None and params is None:
        rule = case.function(**kwargs)
        assert callable(rule)
        assert isinstance(rule(_b, [_a]), dict)
    elif given is None or params is None:
        with pytest.raises(ValueError):
            case.function(**kwargs)
    else:
        assert isinstance(case.function(**kwargs), dict)
