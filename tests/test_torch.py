"""Trajectories of the library and of tests/reference.py against live torch.optim runs.

Each case names the conversion that makes torch.optim run Lasagne's algorithm. Every
implementation runs its own closed loop (the gradient is a function of its own current
parameters) for STEPS steps in float64, and each step is compared with torch's.
"""

import numpy as np
import pytest
from reference import REFERENCES

torch = pytest.importorskip("torch")

STEPS = 150
SHAPES = [(), (5,), (3, 4)]

# lr and beta2 chosen so the Adam family nears the optimum and v shrinks: AMSGrad's
# max(v_hat, v) and Adamax's max(beta2 * u, |g|) then both take each branch.
ADAM = {"learning_rate": 0.05, "beta1": 0.9, "beta2": 0.99}
TORCH_ADAM = {"lr": 0.05, "betas": (0.9, 0.99)}

# (test id: rule-conversion, rule, Lasagne hyperparameters, torch.optim class, kwargs)
CASES = [
    ("sgd", "sgd", {"learning_rate": 0.05}, "SGD", {"lr": 0.05}),
    (
        "momentum-constant_lr",
        "momentum",
        {"learning_rate": 0.02, "momentum": 0.8},
        "SGD",
        {"lr": 0.02, "momentum": 0.8},
    ),
    (
        "nesterov_momentum-constant_lr",
        "nesterov_momentum",
        {"learning_rate": 0.02, "momentum": 0.8},
        "SGD",
        {"lr": 0.02, "momentum": 0.8, "nesterov": True},
    ),
    (
        "adagrad-eps_as_initial_accumulator",
        "adagrad",
        {"learning_rate": 0.1, "epsilon": 1e-3},
        "Adagrad",
        {"lr": 0.1, "eps": 0.0, "initial_accumulator_value": 1e-3},
    ),
    (
        "rmsprop-eps_0",
        "rmsprop",
        {"learning_rate": 0.01, "rho": 0.9, "epsilon": 0.0},
        "RMSprop",
        {"lr": 0.01, "alpha": 0.9, "eps": 0.0},
    ),
    (
        "adadelta-exact",
        "adadelta",
        {"learning_rate": 1.0, "rho": 0.95, "epsilon": 1e-6},
        "Adadelta",
        {"lr": 1.0, "rho": 0.95, "eps": 1e-6},
    ),
    (
        "adam-eps_0",
        "adam",
        {**ADAM, "epsilon": 0.0},
        "Adam",
        {**TORCH_ADAM, "eps": 0.0},
    ),
    (
        "amsgrad-eps_0",
        "amsgrad",
        {**ADAM, "epsilon": 0.0},
        "Adam",
        {**TORCH_ADAM, "eps": 0.0, "amsgrad": True},
    ),
    (
        "adamax-eps_0",
        "adamax",
        {**ADAM, "epsilon": 0.0},
        "Adamax",
        {**TORCH_ADAM, "eps": 0.0},
    ),
    (
        "rmsprop_centered_momentum-eps_0",
        "rmsprop",
        {"learning_rate": 0.01, "rho": 0.9, "epsilon": 0.0, "momentum": 0.7, "centered": True},
        "RMSprop",
        {"lr": 0.01, "alpha": 0.9, "eps": 0.0, "momentum": 0.7, "centered": True},
    ),
    # The rules beyond Lasagne follow torch's formulation: no conversion.
    (
        "adamw-exact",
        "adamw",
        {**ADAM, "weight_decay": 0.1},
        "AdamW",
        {**TORCH_ADAM, "weight_decay": 0.1},
    ),
    (
        "nadam-exact",
        "nadam",
        {**ADAM, "momentum_decay": 4e-3},
        "NAdam",
        {**TORCH_ADAM, "momentum_decay": 4e-3},
    ),
    ("radam-exact", "radam", ADAM, "RAdam", TORCH_ADAM),
    (
        "rprop-exact",
        "rprop",
        {"learning_rate": 0.01, "eta_minus": 0.5, "eta_plus": 1.2, "min_step": 1e-6, "max_step": 50.0},
        "Rprop",
        {"lr": 0.01, "etas": (0.5, 1.2), "step_sizes": (1e-6, 50.0)},
    ),
]


def _problem():
    """Initial params and g(p) = A * (p - c) + 0.1 * p**3 with fixed A > 0 and c."""
    rng = np.random.default_rng(42)
    p0 = [rng.normal(size=s) for s in SHAPES]
    A = [rng.uniform(0.5, 2.0, size=s) for s in SHAPES]
    c = [rng.normal(size=s) for s in SHAPES]
    return p0, lambda ps: [a * (p - ci) + 0.1 * p**3 for p, a, ci in zip(ps, A, c)]


def _run_torch(p0, grad, cls, kwargs):
    params = [torch.tensor(p, dtype=torch.float64) for p in p0]
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # torch keeps NAdam's running product in this dtype
    try:
        opt = getattr(torch.optim, cls)(params, **kwargs)
        out = []
        for _ in range(STEPS):
            for p, g in zip(params, grad([p.numpy() for p in params])):
                p.grad = torch.from_numpy(np.array(g))
            opt.step()
            out.append([p.detach().numpy().copy() for p in params])
    finally:
        torch.set_default_dtype(default)
    return out


def _run_reference(p0, grad, rule, hyper):
    step, ps, out = REFERENCES[rule](p0, **hyper), p0, []
    for _ in range(STEPS):
        ps = step(grad(ps))
        out.append(ps)
    return out


def _run_library(p0, grad, rule, hyper):
    import pytensor
    import pytensor.tensor as pt

    import updates

    params = [pytensor.shared(np.array(p), name=f"w{i}") for i, p in enumerate(p0)]
    gs = [pt.tensor(dtype=p.dtype, shape=p.type.shape, name=f"g{i}") for i, p in enumerate(params)]
    f = pytensor.function(gs, [], updates=getattr(updates, rule)(gs, params, **hyper), mode="FAST_COMPILE")
    out = []
    for _ in range(STEPS):
        f(*grad([p.get_value() for p in params]))
        out.append([p.get_value() for p in params])
    return out


@pytest.mark.parametrize("impl", [_run_reference, _run_library], ids=["reference", "library"])
@pytest.mark.parametrize("rule, hyper, cls, kwargs", [pytest.param(*c[1:], id=c[0]) for c in CASES])
def test_matches_torch(impl, rule, hyper, cls, kwargs):
    p0, grad = _problem()
    expected = _run_torch(p0, grad, cls, kwargs)
    actual = impl(p0, grad, rule, hyper)
    for t, (got, want) in enumerate(zip(actual, expected), start=1):
        for i, (a, b) in enumerate(zip(got, want)):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13, err_msg=f"step {t}, param {i}")
    assert not np.allclose(expected[-1][1], p0[1]), "trajectory did not move"


# ASGD keeps the average of the params as state (torch's state["ax"], "<param>.asgd.ax" here):
# both the params and the averages are compared. "averaging": a decaying step size, weight decay,
# and averaging from step 22 on; "defaults": torch's defaults, where the average is the params.
ASGD_CASES = {
    "averaging": (
        {"learning_rate": 0.05, "lambd": 0.5, "alpha": 0.6, "t0": 20.0, "weight_decay": 0.1},
        {"lr": 0.05, "lambd": 0.5, "alpha": 0.6, "t0": 20.0, "weight_decay": 0.1},
    ),
    "defaults": ({}, {}),
}


def _asgd_torch(p0, grad, kwargs):
    params = [torch.tensor(p, dtype=torch.float64) for p in p0]
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # torch keeps eta and mu in this dtype
    try:
        opt = torch.optim.ASGD(params, foreach=False, **kwargs)
        out = []
        for _ in range(STEPS):
            for p, g in zip(params, grad([p.numpy() for p in params])):
                p.grad = torch.from_numpy(np.array(g))
            opt.step()
            out.append(
                [
                    [p.detach().numpy().copy() for p in params],
                    [opt.state[p]["ax"].numpy().copy() for p in params],
                ]
            )
    finally:
        torch.set_default_dtype(default)
    return out


def _asgd_reference(p0, grad, hyper):
    step, ps, out = REFERENCES["asgd"](p0, **hyper), p0, []
    for _ in range(STEPS):
        ps = step(grad(ps))
        out.append([ps, [np.array(s["ax"]) for s in step.state]])
    return out


def _asgd_library(p0, grad, hyper):
    import pytensor
    import pytensor.tensor as pt

    import updates

    params = [pytensor.shared(np.array(p), name=f"w{i}") for i, p in enumerate(p0)]
    gs = [pt.tensor(dtype=p.dtype, shape=p.type.shape, name=f"g{i}") for i, p in enumerate(params)]
    result = updates.asgd(gs, params, **hyper)
    f = pytensor.function(gs, [], updates=result, mode="FAST_COMPILE")
    out = []
    for _ in range(STEPS):
        f(*grad([p.get_value() for p in params]))
        state = result.named_state()
        out.append([[p.get_value() for p in params], [state[f"w{i}.asgd.ax"] for i in range(len(params))]])
    return out


@pytest.mark.parametrize("impl", [_asgd_reference, _asgd_library], ids=["reference", "library"])
@pytest.mark.parametrize("config", ASGD_CASES)
def test_asgd_params_and_averages_match_torch(impl, config):
    hyper, kwargs = ASGD_CASES[config]
    p0, grad = _problem()
    expected = _asgd_torch(p0, grad, kwargs)
    actual = impl(p0, grad, hyper)
    for t, (got, want) in enumerate(zip(actual, expected), start=1):
        for what, a_list, b_list in zip(("param", "ax"), got, want):
            for i, (a, b) in enumerate(zip(a_list, b_list)):
                np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13, err_msg=f"step {t}, {what} {i}")
    params, averages = expected[-1]
    assert not np.allclose(params[1], p0[1]), "trajectory did not move"
    if config == "averaging":
        assert not np.allclose(averages[1], params[1]), "the average must differ from the params"
    else:
        assert all(np.array_equal(a, p) for a, p in zip(averages, params)), "t0=1e6: ax is the params"


# Adafactor keeps factored second moments of other shapes than the params (torch's
# state["row_var"] and state["col_var"], "<param>.adafactor.row_var" and ".col_var" here) for the
# matrix and the 3-D param, state["variance"] for the vector and the scalar: all compared with the
# params, over 80 steps. Larger steps (lr 0.05 with weight decay) turn this problem chaotic near
# its optimum, where the normalized step amplifies the rounding of g = A (p - c) + 0.1 p**3.
ADAFACTOR_SHAPES = [(4, 5), (6,), (2, 3, 4), ()]
ADAFACTOR_STEPS = 80
ADAFACTOR_CASES = {
    "defaults": ({}, {}),
    "weight_decay": ({"learning_rate": 0.02, "weight_decay": 0.05}, {"lr": 0.02, "weight_decay": 0.05}),
    "floors_and_clip": (
        {"learning_rate": 0.03, "epsilon1": 1e-3, "epsilon2": 0.1, "clip_threshold": 1.5},
        {"lr": 0.03, "eps": (1e-3, 0.1), "d": 1.5},
    ),
    "beta2_decay": (
        {"learning_rate": 0.02, "beta2_decay": -0.5, "epsilon1": 1e-3},
        {"lr": 0.02, "beta2_decay": -0.5, "eps": (1e-3, 1e-3)},
    ),
}


def _adafactor_problem():
    rng = np.random.default_rng(42)
    p0 = [rng.normal(size=s) for s in ADAFACTOR_SHAPES]
    A = [rng.uniform(0.5, 2.0, size=s) for s in ADAFACTOR_SHAPES]
    c = [rng.normal(size=s) for s in ADAFACTOR_SHAPES]
    return p0, lambda ps: [a * (p - ci) + 0.1 * p**3 for p, a, ci in zip(ps, A, c)]


def _adafactor_slots(p):
    return ("row_var", "col_var") if np.ndim(p) >= 2 else ("variance",)


def _adafactor_torch(p0, grad, kwargs):
    params = [torch.tensor(p, dtype=torch.float64) for p in p0]
    opt = torch.optim.Adafactor(params, foreach=False, **kwargs)
    out = []
    for _ in range(ADAFACTOR_STEPS):
        for p, g in zip(params, grad([p.numpy() for p in params])):
            p.grad = torch.from_numpy(np.array(g))
        opt.step()
        state = {
            (i, k): opt.state[p][k].numpy().copy() for i, p in enumerate(params) for k in _adafactor_slots(p)
        }
        out.append(([p.detach().numpy().copy() for p in params], state))
    return out


def _adafactor_reference(p0, grad, hyper):
    step, ps, out = REFERENCES["adafactor"](p0, **hyper), p0, []
    for _ in range(ADAFACTOR_STEPS):
        ps = step(grad(ps))
        state = {(i, k): np.array(step.state[i][k]) for i, p in enumerate(ps) for k in _adafactor_slots(p)}
        out.append((ps, state))
    return out


def _adafactor_library(p0, grad, hyper):
    import pytensor
    import pytensor.tensor as pt

    import updates

    params = [pytensor.shared(np.array(p), name=f"w{i}") for i, p in enumerate(p0)]
    gs = [pt.tensor(dtype=p.dtype, shape=p.type.shape, name=f"g{i}") for i, p in enumerate(params)]
    result = updates.adafactor(gs, params, **hyper)
    f = pytensor.function(gs, [], updates=result, mode="FAST_COMPILE")
    out = []
    for _ in range(ADAFACTOR_STEPS):
        f(*grad([p.get_value() for p in params]))
        named = result.named_state()
        state = {(i, k): named[f"w{i}.adafactor.{k}"] for i, p in enumerate(p0) for k in _adafactor_slots(p)}
        out.append(([p.get_value() for p in params], state))
    return out


@pytest.mark.parametrize("impl", [_adafactor_reference, _adafactor_library], ids=["reference", "library"])
@pytest.mark.parametrize("config", ADAFACTOR_CASES)
def test_adafactor_params_and_factors_match_torch(impl, config):
    hyper, kwargs = ADAFACTOR_CASES[config]
    p0, grad = _adafactor_problem()
    expected = _adafactor_torch(p0, grad, kwargs)
    actual = impl(p0, grad, hyper)
    for t, ((params, state), (want_params, want_state)) in enumerate(zip(actual, expected), start=1):
        for i, (a, b) in enumerate(zip(params, want_params)):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13, err_msg=f"step {t}, param {i}")
        assert state.keys() == want_state.keys()
        for key, b in want_state.items():
            assert state[key].shape == b.shape, (t, key)
            np.testing.assert_allclose(state[key], b, rtol=1e-10, atol=1e-13, err_msg=f"step {t}, {key}")
    assert all(not np.allclose(p, q) for p, q in zip(expected[-1][0], p0)), "trajectory did not move"
    assert expected[-1][1][0, "row_var"].shape == (4, 1) and expected[-1][1][2, "col_var"].shape == (2, 1, 4)


# Muon orthogonalizes the momentum of each matrix by Newton-Schulz iterations, which torch runs
# in bfloat16 whatever the param's dtype (`grad.bfloat16()` in `_zeropower_via_newtonschulz`,
# on the CPU too). The library runs them in the param's dtype, so torch is run with that one
# cast made the identity (torch's own iteration then runs in float64): params and momentum
# buffers over 50 steps, a tall, a wide, a square and a one-row matrix. The last test compares
# with torch as shipped, to bfloat16's precision.
MUON_SHAPES = [(5, 3), (3, 6), (4, 4), (1, 5)]
MUON_STEPS = 50
MUON_PLAIN = {"nesterov": False, "adjust_lr_fn": "match_rms_adamw"}
MUON_NS = {"ns_coefficients": (2.0, -1.5, 0.5), "ns_steps": 3, "adjust_lr_fn": "original"}
MUON_CASES = {
    "defaults_lr": ({"learning_rate": 0.02}, {"lr": 0.02}),
    "plain_momentum_match_rms": (
        {"learning_rate": 0.01, "weight_decay": 0.05, "momentum": 0.9, **MUON_PLAIN},
        {"lr": 0.01, "weight_decay": 0.05, "momentum": 0.9, **MUON_PLAIN},
    ),
    "ns_options": (
        {"learning_rate": 0.03, "weight_decay": 0.0, "epsilon": 1e-3, **MUON_NS},
        {"lr": 0.03, "weight_decay": 0.0, "eps": 1e-3, **MUON_NS},
    ),
}


def _muon_problem():
    rng = np.random.default_rng(7)
    p0 = [rng.normal(size=s) for s in MUON_SHAPES]
    A = [rng.uniform(0.5, 2.0, size=s) for s in MUON_SHAPES]
    c = [rng.normal(size=s) for s in MUON_SHAPES]
    return p0, lambda ps: [a * (p - ci) + 0.1 * p**3 for p, a, ci in zip(ps, A, c)]


def _muon_torch(p0, grad, kwargs, steps=MUON_STEPS):
    params = [torch.tensor(p, dtype=torch.float64) for p in p0]
    opt = torch.optim.Muon(params, **kwargs)
    out = []
    for _ in range(steps):
        for p, g in zip(params, grad([p.numpy() for p in params])):
            p.grad = torch.from_numpy(np.array(g))
        opt.step()
        buffers = [opt.state[p]["momentum_buffer"].numpy().copy() for p in params]
        out.append(([p.detach().numpy().copy() for p in params], buffers))
    return out


def _muon_reference(p0, grad, hyper):
    step, ps, out = REFERENCES["muon"](p0, **hyper), p0, []
    for _ in range(MUON_STEPS):
        ps = step(grad(ps))
        out.append((ps, [np.array(s["momentum_buffer"]) for s in step.state]))
    return out


def _muon_library(p0, grad, hyper):
    import pytensor
    import pytensor.tensor as pt

    import updates

    params = [pytensor.shared(np.array(p), name=f"w{i}") for i, p in enumerate(p0)]
    gs = [pt.tensor(dtype=p.dtype, shape=p.type.shape, name=f"g{i}") for i, p in enumerate(params)]
    result = updates.muon(gs, params, **hyper)
    f = pytensor.function(gs, [], updates=result, mode="FAST_COMPILE")
    out = []
    for _ in range(MUON_STEPS):
        f(*grad([p.get_value() for p in params]))
        named = result.named_state()
        buffers = [named[f"w{i}.muon.momentum_buffer"] for i in range(len(p0))]
        out.append(([p.get_value() for p in params], buffers))
    return out


@pytest.mark.parametrize("impl", [_muon_reference, _muon_library], ids=["reference", "library"])
@pytest.mark.parametrize("config", MUON_CASES)
def test_muon_params_and_buffers_match_torch(impl, config, monkeypatch):
    hyper, kwargs = MUON_CASES[config]
    p0, grad = _muon_problem()
    with monkeypatch.context() as patch:
        patch.setattr(torch.Tensor, "bfloat16", lambda self, *a, **k: self.clone())
        expected = _muon_torch(p0, grad, kwargs)
    actual = impl(p0, grad, hyper)
    for t, ((params, buffers), (want_params, want_buffers)) in enumerate(zip(actual, expected), start=1):
        for i, (a, b) in enumerate(zip(params, want_params)):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13, err_msg=f"step {t}, param {i}")
        for i, (a, b) in enumerate(zip(buffers, want_buffers)):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13, err_msg=f"step {t}, buffer {i}")
    assert all(not np.allclose(p, q) for p, q in zip(expected[-1][0], p0)), "trajectory did not move"


def test_muon_agrees_with_torchs_bfloat16_newton_schulz_to_its_precision():
    """torch as shipped rounds Newton-Schulz to bfloat16 (8 bits of mantissa): one step from the
    same params, the library's float64 step and torch's differ by about 1% of the step."""
    p0, grad = _muon_problem()
    ((torch_params, _),) = _muon_torch(p0, grad, {"lr": 0.02}, steps=1)
    exact = REFERENCES["muon"](p0, learning_rate=0.02)(grad(p0))
    for p, a, b in zip(p0, exact, torch_params):
        step = np.abs(a - p).max()
        assert np.abs(a - b).max() < 0.03 * step
        assert np.abs(a - b).max() > 1e-8 * step  # torch's step really is rounded
