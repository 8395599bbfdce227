"""Plain-NumPy reference implementations of the update rules, Lasagne formulation.

Written from the published equations, independent of the library. Each rule is a
factory ``REFERENCES[name](params, **hyper)`` returning ``step(grads) -> new params``.
The reference keeps its own copies of the parameters and of its state; it never
mutates the caller's arrays.

Numerics: everything is computed in each parameter's own dtype. Hyperparameters are
cast to that dtype first, ``1 - beta`` is computed in it, and the integer step count
``t`` (1 on the first step) is cast to it before any power. State starts at zero.
"""

import math
from collections.abc import Callable

import numpy as np

REFERENCES: dict[str, Callable] = {}


def _rule(*slots, **defaults):
    """Register ``core(p, g, s, t, **hyper) -> new p`` as a reference rule.

    ``s`` maps each slot name to its state array and is updated in place by ``core``;
    ``t`` and the hyperparameters arrive already cast to the parameter's dtype.
    """

    def register(core):
        name = core.__name__.lstrip("_")

        def make(params, **hyper):
            unknown = set(hyper) - set(defaults)
            if unknown:
                raise TypeError(f"{name}: unknown hyperparameters {sorted(unknown)}")
            hyper = {**defaults, **hyper}
            params = [np.array(p, copy=True) for p in params]
            state = [{k: np.zeros_like(p) for k in slots} for p in params]
            t = 0

            def step(grads):
                nonlocal t
                if len(grads) != len(params):
                    raise ValueError(f"{name}: got {len(grads)} grads for {len(params)} params")
                t += 1
                for i, (p, g) in enumerate(zip(params, grads)):
                    cast = p.dtype.type
                    h = {k: cast(v) for k, v in hyper.items()}
                    g = np.asarray(g, dtype=p.dtype)
                    new = core(p, g, state[i], cast(t), **h)
                    params[i] = np.asarray(new, dtype=p.dtype).reshape(p.shape)
                return [p.copy() for p in params]

            step.state = state  # each param's slots, for the tests that compare state too
            return step

        make.__name__ = name
        make.__doc__ = core.__doc__
        REFERENCES[name] = make
        return make

    return register


@_rule(learning_rate=1e-3)
def sgd(p, g, s, t, learning_rate):
    """p <- p - lr * g"""
    return p - learning_rate * g


@_rule("velocity", learning_rate=1e-3, momentum=0.9)
def momentum(p, g, s, t, learning_rate, momentum):
    """x = mu * vel + (p - lr * g); vel <- x - p; p <- x"""
    x = momentum * s["velocity"] + (p - learning_rate * g)
    s["velocity"] = x - p
    return x


@_rule("velocity", learning_rate=1e-3, momentum=0.9)
def nesterov_momentum(p, g, s, t, learning_rate, momentum):
    """u = p - lr * g; x = mu * vel + u - p; vel <- x; p <- mu * x + u"""
    u = p - learning_rate * g
    x = momentum * s["velocity"] + u - p
    s["velocity"] = x
    return momentum * x + u


@_rule("accu", learning_rate=1.0, epsilon=1e-6)
def adagrad(p, g, s, t, learning_rate, epsilon):
    """a <- a + g**2; p <- p - lr * g / sqrt(a + eps)"""
    s["accu"] = s["accu"] + g**2
    return p - learning_rate * g / np.sqrt(s["accu"] + epsilon)


@_rule("accu", "grad_avg", "velocity", learning_rate=1.0, rho=0.9, epsilon=1e-6, momentum=0.0, centered=False)
def rmsprop(p, g, s, t, learning_rate, rho, epsilon, momentum, centered):
    """a <- rho * a + (1 - rho) * g**2; p <- p - lr * g / sqrt(a + eps)
    centered (Graves 2013): mg <- rho * mg + (1 - rho) * g, divide by sqrt(a - mg**2 + eps)
    momentum: b <- mu * b + lr * g / sqrt(...); p <- p - b
    """
    one = p.dtype.type(1)
    s["accu"] = rho * s["accu"] + (one - rho) * g**2
    variance = s["accu"]
    if centered:
        s["grad_avg"] = rho * s["grad_avg"] + (one - rho) * g
        variance = s["accu"] - s["grad_avg"] ** 2
    s["velocity"] = momentum * s["velocity"] + learning_rate * g / np.sqrt(variance + epsilon)
    return p - s["velocity"]


@_rule("accu", "delta_accu", learning_rate=1.0, rho=0.95, epsilon=1e-6)
def adadelta(p, g, s, t, learning_rate, rho, epsilon):
    """a <- rho * a + (1 - rho) * g**2
    u = g * sqrt(d + eps) / sqrt(a + eps)      (old d, new a)
    p <- p - lr * u
    d <- rho * d + (1 - rho) * u**2
    """
    one = p.dtype.type(1)
    s["accu"] = rho * s["accu"] + (one - rho) * g**2
    u = g * np.sqrt(s["delta_accu"] + epsilon) / np.sqrt(s["accu"] + epsilon)
    s["delta_accu"] = rho * s["delta_accu"] + (one - rho) * u**2
    return p - learning_rate * u


@_rule("m", "v", learning_rate=1e-3, beta1=0.9, beta2=0.999, epsilon=1e-8)
def adam(p, g, s, t, learning_rate, beta1, beta2, epsilon):
    """alpha = lr * sqrt(1 - b2**t) / (1 - b1**t)
    m <- b1 * m + (1 - b1) * g;  v <- b2 * v + (1 - b2) * g**2
    p <- p - alpha * m / (sqrt(v) + eps)
    """
    one = p.dtype.type(1)
    alpha = learning_rate * np.sqrt(one - beta2**t) / (one - beta1**t)
    s["m"] = beta1 * s["m"] + (one - beta1) * g
    s["v"] = beta2 * s["v"] + (one - beta2) * g**2
    return p - alpha * s["m"] / (np.sqrt(s["v"]) + epsilon)


@_rule("m", "u", learning_rate=2e-3, beta1=0.9, beta2=0.999, epsilon=1e-8)
def adamax(p, g, s, t, learning_rate, beta1, beta2, epsilon):
    """alpha = lr / (1 - b1**t)
    m <- b1 * m + (1 - b1) * g;  u <- max(b2 * u, |g|)
    p <- p - alpha * m / (u + eps)
    """
    one = p.dtype.type(1)
    alpha = learning_rate / (one - beta1**t)
    s["m"] = beta1 * s["m"] + (one - beta1) * g
    s["u"] = np.maximum(beta2 * s["u"], np.abs(g))
    return p - alpha * s["m"] / (s["u"] + epsilon)


@_rule("m", "v", "v_hat", learning_rate=1e-3, beta1=0.9, beta2=0.999, epsilon=1e-8)
def amsgrad(p, g, s, t, learning_rate, beta1, beta2, epsilon):
    """alpha = lr * sqrt(1 - b2**t) / (1 - b1**t)
    m <- b1 * m + (1 - b1) * g;  v <- b2 * v + (1 - b2) * g**2;  v_hat <- max(v_hat, v)
    p <- p - alpha * m / (sqrt(v_hat) + eps)
    """
    one = p.dtype.type(1)
    alpha = learning_rate * np.sqrt(one - beta2**t) / (one - beta1**t)
    s["m"] = beta1 * s["m"] + (one - beta1) * g
    s["v"] = beta2 * s["v"] + (one - beta2) * g**2
    s["v_hat"] = np.maximum(s["v_hat"], s["v"])
    return p - alpha * s["m"] / (np.sqrt(s["v_hat"]) + epsilon)


# -- rules beyond Lasagne (the published algorithms; torch's epsilon placement where torch has them)

ADAM_DEFAULTS = dict(learning_rate=1e-3, beta1=0.9, beta2=0.999, epsilon=1e-8)


@_rule("m", "v", **ADAM_DEFAULTS, weight_decay=1e-2)
def adamw(p, g, s, t, learning_rate, beta1, beta2, epsilon, weight_decay):
    """p <- p * (1 - lr * wd); m, v as Adam; p <- p - lr * mhat / (sqrt(vhat) + eps)"""
    one = p.dtype.type(1)
    p = p * (one - learning_rate * weight_decay)
    s["m"] = beta1 * s["m"] + (one - beta1) * g
    s["v"] = beta2 * s["v"] + (one - beta2) * g**2
    m_hat, v_hat = s["m"] / (one - beta1**t), s["v"] / (one - beta2**t)
    return p - learning_rate * m_hat / (np.sqrt(v_hat) + epsilon)


@_rule("m", "v", **{**ADAM_DEFAULTS, "learning_rate": 2e-3}, momentum_decay=4e-3)
def nadam(p, g, s, t, learning_rate, beta1, beta2, epsilon, momentum_decay):
    """mu_t = b1 * (1 - 0.5 * 0.96**(t * psi)); P_t = prod of mu_1..mu_t
    p <- p - lr (1 - mu_t) / (1 - P_t) g / d - lr mu_{t+1} / (1 - P_t mu_{t+1}) m / d,
    d = sqrt(vhat) + eps
    """
    one, half = p.dtype.type(1), p.dtype.type(0.5)
    mu = beta1 * (one - half * p.dtype.type(0.96) ** (t * momentum_decay))
    mu_next = beta1 * (one - half * p.dtype.type(0.96) ** ((t + one) * momentum_decay))
    s["product"] = s.get("product", one) * mu
    s["m"] = beta1 * s["m"] + (one - beta1) * g
    s["v"] = beta2 * s["v"] + (one - beta2) * g**2
    d = np.sqrt(s["v"] / (one - beta2**t)) + epsilon
    grad_term = learning_rate * (one - mu) / (one - s["product"]) * g / d
    return p - grad_term - learning_rate * mu_next / (one - s["product"] * mu_next) * s["m"] / d


@_rule("m", "v", **ADAM_DEFAULTS)
def radam(p, g, s, t, learning_rate, beta1, beta2, epsilon):
    """rho_inf = 2 / (1 - b2) - 1; rho_t = rho_inf - 2 t b2**t / (1 - b2**t)
    rho_t > 5: p <- p - lr mhat r_t sqrt(1 - b2**t) / (sqrt(v) + eps), else p <- p - lr mhat
    """
    one, two = p.dtype.type(1), p.dtype.type(2)
    s["m"] = beta1 * s["m"] + (one - beta1) * g
    s["v"] = beta2 * s["v"] + (one - beta2) * g**2
    m_hat = s["m"] / (one - beta1**t)
    rho_inf = two / (one - beta2) - one
    rho_t = rho_inf - two * t * beta2**t / (one - beta2**t)
    if rho_t <= 5:
        return p - learning_rate * m_hat
    r = np.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
    return p - learning_rate * m_hat * r * np.sqrt(one - beta2**t) / (np.sqrt(s["v"]) + epsilon)


@_rule("m", "s", **{**ADAM_DEFAULTS, "epsilon": 1e-16})
def adabelief(p, g, s, t, learning_rate, beta1, beta2, epsilon):
    """m <- b1 m + (1 - b1) g; s <- b2 s + (1 - b2) (g - m)**2 + eps
    p <- p - lr mhat / (sqrt(shat) + eps)
    """
    one = p.dtype.type(1)
    s["m"] = beta1 * s["m"] + (one - beta1) * g
    s["s"] = beta2 * s["s"] + (one - beta2) * (g - s["m"]) ** 2 + epsilon
    m_hat, s_hat = s["m"] / (one - beta1**t), s["s"] / (one - beta2**t)
    return p - learning_rate * m_hat / (np.sqrt(s_hat) + epsilon)


@_rule("m", "v", learning_rate=1e-2, beta1=0.9, beta2=0.999, epsilon=1e-3)
def yogi(p, g, s, t, learning_rate, beta1, beta2, epsilon):
    """m <- b1 m + (1 - b1) g; v <- v - (1 - b2) sign(v - g**2) g**2; p <- p - lr m / (sqrt(v) + eps)"""
    one = p.dtype.type(1)
    s["m"] = beta1 * s["m"] + (one - beta1) * g
    s["v"] = s["v"] - (one - beta2) * np.sign(s["v"] - g**2) * g**2
    return p - learning_rate * s["m"] / (np.sqrt(s["v"]) + epsilon)


@_rule("m", learning_rate=1e-4, beta1=0.9, beta2=0.99, weight_decay=0.0)
def lion(p, g, s, t, learning_rate, beta1, beta2, weight_decay):
    """c = b1 m + (1 - b1) g; p <- p - lr (sign(c) + wd p); m <- b2 m + (1 - b2) g"""
    one = p.dtype.type(1)
    c = beta1 * s["m"] + (one - beta1) * g
    s["m"] = beta2 * s["m"] + (one - beta2) * g
    return p - learning_rate * (np.sign(c) + weight_decay * p)


@_rule(learning_rate=1e-3)
def sign_sgd(p, g, s, t, learning_rate):
    """signSGD (Bernstein et al. 2018, Algorithm 1): p <- p - lr sign(g)"""
    return p - learning_rate * np.sign(g)


@_rule("m", learning_rate=1e-3, beta=0.9)
def signum(p, g, s, t, learning_rate, beta):
    """Signum (Bernstein et al. 2018, Algorithm 2): m <- beta m + (1 - beta) g; p <- p - lr sign(m)"""
    s["m"] = beta * s["m"] + (p.dtype.type(1) - beta) * g
    return p - learning_rate * np.sign(s["m"])


@_rule("prev", learning_rate=1e-2, eta_minus=0.5, eta_plus=1.2, min_step=1e-6, max_step=50.0)
def rprop(p, g, s, t, learning_rate, eta_minus, eta_plus, min_step, max_step):
    """iRprop-: step sizes start at lr; x eta_plus where g * prev > 0, x eta_minus (and g := 0)
    where < 0; clipped to [min_step, max_step]; p <- p - sign(g) step; prev <- g"""
    if "step" not in s:
        s["step"] = np.full_like(p, learning_rate)
    agreement = g * s["prev"]
    factor = np.where(agreement > 0, eta_plus, np.where(agreement < 0, eta_minus, p.dtype.type(1)))
    s["step"] = np.clip(s["step"] * factor, min_step, max_step).astype(p.dtype)
    g = np.where(agreement < 0, p.dtype.type(0), g)
    s["prev"] = g
    return p - np.sign(g) * s["step"]


@_rule("ax", learning_rate=1e-2, lambd=1e-4, alpha=0.75, t0=1e6, weight_decay=0.0)
def asgd(p, g, s, t, learning_rate, lambd, alpha, t0, weight_decay):
    """Polyak-Ruppert averaged SGD (Polyak and Juditsky 1992; Bottou 2012's schedule), with
    k = t - 1 the steps taken before: eta = lr / (1 + lambd lr k)**alpha; mu = 1 / max(1, k - t0);
    g <- g + wd p; p <- p (1 - lambd eta) - eta g; ax <- p if mu == 1 else ax + mu (p - ax)"""
    one = p.dtype.type(1)
    k = t - one
    eta = learning_rate / (one + lambd * learning_rate * k) ** alpha
    mu = one / np.maximum(one, k - t0)
    g = g + weight_decay * p
    p = p * (one - lambd * eta) - eta * g
    s["ax"] = p.copy() if mu == one else s["ax"] + mu * (p - s["ax"])
    return p


@_rule(
    "m",
    "v",
    learning_rate=1e-3,
    beta1=0.9,
    beta2=0.9999,
    epsilon=1e-6,
    clip_exponent=0.25,
    use_clipping=True,
    nesterov=False,
)
def adopt(p, g, s, t, learning_rate, beta1, beta2, epsilon, clip_exponent, use_clipping, nesterov):
    """ADOPT (Taniguchi et al. 2024, Algorithm 1 with the clipped update of its Section 5): the
    paper's step 0 (our t = 1) only sets v = g**2; at its step k = t - 1 >= 1:
    m <- b1 m + (1 - b1) clip(g / max(sqrt(v), eps), k**e); p <- p - lr m;
    v <- b2 v + (1 - b2) g**2 (v of the steps before in the normalization)"""
    one = p.dtype.type(1)
    if t == one:
        s["v"] = g**2
        return p
    normalized = g / np.maximum(np.sqrt(s["v"]), epsilon)
    if use_clipping:
        bound = (t - one) ** clip_exponent
        normalized = np.clip(normalized, -bound, bound)
    s["m"] = beta1 * s["m"] + (one - beta1) * normalized
    s["v"] = beta2 * s["v"] + (one - beta2) * g**2
    step = beta1 * s["m"] + (one - beta1) * normalized if nesterov else s["m"]
    return p - learning_rate * step


@_rule(
    "m1",
    "m2",
    "nu",
    learning_rate=1e-3,
    beta1=0.9,
    beta2=0.999,
    beta3=0.9999,
    alpha=5.0,
    epsilon=1e-8,
    weight_decay=0.0,
)
def ademamix(p, g, s, t, learning_rate, beta1, beta2, beta3, alpha, epsilon, weight_decay):
    """AdEMAMix (Pagliardini et al. 2024, Algorithm 1, alpha and beta3 constant): a fast and a
    slow EMA of g, m1 bias-corrected, m2 not: p <- p - lr ((m1hat + alpha m2) / (sqrt(nuhat) + eps) + wd p)"""
    one = p.dtype.type(1)
    s["m1"] = beta1 * s["m1"] + (one - beta1) * g
    s["m2"] = beta3 * s["m2"] + (one - beta3) * g
    s["nu"] = beta2 * s["nu"] + (one - beta2) * g**2
    m1_hat, nu_hat = s["m1"] / (one - beta1**t), s["nu"] / (one - beta2**t)
    return p - learning_rate * ((m1_hat + alpha * s["m2"]) / (np.sqrt(nu_hat) + epsilon) + weight_decay * p)


@_rule(
    "m",
    "v",
    "n",
    "prev",
    learning_rate=1e-3,
    beta1=0.98,
    beta2=0.92,
    beta3=0.99,
    epsilon=1e-8,
    epsilon_root=1e-8,
    weight_decay=0.0,
)
def adan(p, g, s, t, learning_rate, beta1, beta2, beta3, epsilon, epsilon_root, weight_decay):
    """Adan (Xie et al. 2022, Algorithm 1) in the paper's notation, b_k = 1 - beta_k weighing the
    new term: m <- (1 - b1) m + b1 g; v <- (1 - b2) v + b2 d; n <- (1 - b3) n + b3 (g + c d)**2;
    p <- p - lr ((m + c v) / (sqrt(n) + eps) + wd p), d = g - g_prev. The paper (and its authors'
    code) has c = 1 - b2; optax 0.2.8 computes c = b2 (its `1 - b2` of its own b2 = 1 - paper's
    b2; optax PR #1715 corrects it), and this library matches optax, so c = b2 here. Also as
    optax: the averages start at 0 and are bias-corrected (the paper starts them at the first
    gradient), d is 0 on the first step, eps_root under the root, and the weight decay is added
    to the step (not the paper's division by 1 + lr wd)."""
    one = p.dtype.type(1)
    b1, b2, b3 = one - beta1, one - beta2, one - beta3
    c = b2  # optax 0.2.8; the paper's is one - b2
    d = np.zeros_like(g) if t == one else g - s["prev"]
    s["m"] = (one - b1) * s["m"] + b1 * g
    s["v"] = (one - b2) * s["v"] + b2 * d
    s["n"] = (one - b3) * s["n"] + b3 * (g + c * d) ** 2
    s["prev"] = g.copy()
    m_hat, v_hat, n_hat = (s[k] / (one - (one - b) ** t) for k, b in (("m", b1), ("v", b2), ("n", b3)))
    step = (m_hat + c * v_hat) / (np.sqrt(n_hat + epsilon_root) + epsilon)
    return p - learning_rate * (step + weight_decay * p)


@_rule("m", learning_rate=1e-3, beta1=0.9, beta2=0.25, epsilon=1e-6, epsilon_root=0.0, weight_decay=0.0)
def novograd(p, g, s, t, learning_rate, beta1, beta2, epsilon, epsilon_root, weight_decay):
    """NovoGrad (Ginsburg et al. 2019, Algorithm 1), per layer (tensor): v_1 = ||g_1||**2,
    v_t = b2 v_{t-1} + (1 - b2) ||g_t||**2; m_1 = g_1 / sqrt(v_1) + d w_1,
    m_t = b1 m_{t-1} + (g_t / (sqrt(v_t) + eps) + d w_t); w <- w - lr m_t. eps_root under the
    root and eps at the first step too, as optax."""
    norm2 = np.sum(g * g)
    s["v"] = norm2 if t == 1 else beta2 * s["v"] + (1 - beta2) * norm2
    u = g / (np.sqrt(s["v"] + epsilon_root) + epsilon) + weight_decay * p
    s["m"] = u if t == 1 else beta1 * s["m"] + u
    return p - learning_rate * s["m"]


@_rule(learning_rate=1e-2, min_norm=1e-6)
def fromage(p, g, s, t, learning_rate, min_norm):
    """Fromage (Bernstein et al. 2020, Algorithm 1): w <- (w - lr ||w|| / ||g|| g) / sqrt(1 + lr**2),
    both norms floored at min_norm (optax's safe_norm)."""
    ratio = max(np.linalg.norm(p), min_norm) / max(np.linalg.norm(g), min_norm)
    return (p - learning_rate * ratio * g) / np.sqrt(1 + learning_rate**2)


@_rule("prev", learning_rate=1e-3, alpha=1.0, beta=1.0)
def optimistic_gradient_descent(p, g, s, t, learning_rate, alpha, beta):
    """Generalized OGD (Mokhtari et al. 2020, eq. (10) with optax's alpha, beta):
    x <- x - lr ((alpha + beta) g_t - beta g_{t-1}), g_0 = g_1."""
    previous = g if t == 1 else s["prev"]
    s["prev"] = g.copy()
    return p - learning_rate * ((alpha + beta) * g - beta * previous)


@_rule(
    "m",
    "v",
    "prev",
    learning_rate=1e-3,
    optimism=None,
    beta1=0.9,
    beta2=0.999,
    epsilon=1e-8,
    epsilon_root=0.0,
    nesterov=True,
)
def optimistic_adam(p, g, s, t, learning_rate, optimism, beta1, beta2, epsilon, epsilon_root, nesterov):
    """Optimistic Adam (Daskalakis et al. 2018, Algorithm 1): r_t Adam's direction
    m_hat / (sqrt(v_hat) + eps), w <- w - (lr + o) r_t + o r_{t-1}, r_0 = r_1, o = lr by default
    (None, NaN once cast); m_hat with Nesterov's look-ahead b1 m_t / (1 - b1**(t+1))
    + (1 - b1) g / (1 - b1**t) by default, as optax (Dozat 2016)."""
    o = learning_rate if np.isnan(optimism) else optimism
    s["m"] = beta1 * s["m"] + (1 - beta1) * g
    s["v"] = beta2 * s["v"] + (1 - beta2) * g * g
    if nesterov:
        m_hat = beta1 * s["m"] / (1 - beta1 ** (t + 1)) + (1 - beta1) * g / (1 - beta1**t)
    else:
        m_hat = s["m"] / (1 - beta1**t)
    r = m_hat / (np.sqrt(s["v"] / (1 - beta2**t) + epsilon_root) + epsilon)
    previous = r if t == 1 else s["prev"]
    s["prev"] = r
    return p - ((learning_rate + o) * r - o * previous)


@_rule(
    "m",
    "nu",
    learning_rate=1e-3,
    beta1=0.99,
    beta2=0.95,
    alpha=0.0,
    epsilon=1e-8,
    epsilon_root=0.0,
    weight_decay=0.0,
)
def simplified_ademamix(p, g, s, t, learning_rate, beta1, beta2, alpha, epsilon, epsilon_root, weight_decay):
    """Simplified AdEMAMix (Morwani et al. 2025, Algorithm 2, alpha constant): an undamped
    momentum sum m <- beta1 m + g, not bias-corrected; nu an EMA of g**2, bias-corrected;
    p <- p - lr ((m + alpha g) / (sqrt(nuhat + eps_root) + eps) + wd p)"""
    one = p.dtype.type(1)
    s["m"] = beta1 * s["m"] + g
    s["nu"] = beta2 * s["nu"] + (one - beta2) * g**2
    nu_hat = s["nu"] / (one - beta2**t)
    step = (s["m"] + alpha * g) / (np.sqrt(nu_hat + epsilon_root) + epsilon)
    return p - learning_rate * (step + weight_decay * p)


@_rule("grad_sum_sq", "s", "x0", learning_rate=1e-2, momentum=0.9, epsilon=1e-6, weight_decay=0.0)
def madgrad(p, g, s, t, learning_rate, momentum, epsilon, weight_decay):
    """MADGRAD (Defazio and Jelassi 2021, Algorithm 1) as optax.contrib weighs it: lambda_t =
    (lr + eps) sqrt(t) (the paper's lr sqrt(t)), g <- g + wd p; nu <- nu + lambda_t g**2;
    s <- s + lambda_t g; z = x0 - s / (cbrt(nu) + eps); p <- (1 - mu) z + mu p"""
    one = p.dtype.type(1)
    if t == one:
        s["x0"] = p.copy()
    g = g + weight_decay * p
    lamb = (learning_rate + epsilon) * np.sqrt(t)
    s["grad_sum_sq"] = s["grad_sum_sq"] + lamb * g**2
    s["s"] = s["s"] + lamb * g
    z = s["x0"] - s["s"] / (np.cbrt(s["grad_sum_sq"]) + epsilon)
    return (one - momentum) * z + momentum * p


def _schedule_free(p, s, t, z_step, learning_rate, warmup_steps, beta1, weight_lr_power):
    """Schedule-Free (Defazio et al. 2024, Algorithm 1) as optax.contrib computes it, with x
    kept (not recovered from y and z): z <- z - lr_{t-1} u(y); lr_max = max(lr_max, lr_t);
    c = lr_max**r / sum of those weights; x <- (1 - c) x + c z; y = (1 - b1) z + b1 x. The
    warmup lr_k = lr min(k, T) / T is optax's; the paper folds Adam's sqrt(1 - b2**t) into the
    weights' rate and weighs by the current one, optax by the largest so far."""
    zero, one = p.dtype.type(0), p.dtype.type(1)
    if t == one:
        s["z"], s["x"] = p.copy(), p.copy()
        s["max_lr"], s["weight_sum"] = zero, zero

    def rate(k):
        return learning_rate * (min(k, warmup_steps) / warmup_steps if warmup_steps > zero else one)

    s["z"] = s["z"] - rate(t - one) * z_step
    s["max_lr"] = max(s["max_lr"], rate(t))
    weight = s["max_lr"] ** weight_lr_power
    s["weight_sum"] = s["weight_sum"] + weight
    c = weight / s["weight_sum"] if s["weight_sum"] > zero else zero
    s["x"] = (one - c) * s["x"] + c * s["z"]
    return (one - beta1) * s["z"] + beta1 * s["x"]


@_rule("z", "x", learning_rate=1.0, warmup_steps=0, beta1=0.9, weight_decay=0.0, weight_lr_power=2.0)
def schedule_free_sgd(p, g, s, t, learning_rate, warmup_steps, beta1, weight_decay, weight_lr_power):
    """Schedule-Free SGD: the step of z is lr (g + wd y), the gradient and decay at y = p."""
    return _schedule_free(p, s, t, g + weight_decay * p, learning_rate, warmup_steps, beta1, weight_lr_power)


@_rule(
    "z",
    "v",
    "x",
    learning_rate=0.0025,
    warmup_steps=0,
    beta1=0.9,
    beta2=0.999,
    epsilon=1e-8,
    weight_decay=0.0,
    weight_lr_power=2.0,
)
def schedule_free_adamw(
    p, g, s, t, learning_rate, warmup_steps, beta1, beta2, epsilon, weight_decay, weight_lr_power
):
    """Schedule-Free AdamW: v <- b2 v + (1 - b2) g**2; the step of z is
    lr (g / (sqrt(v / (1 - b2**t)) + eps) + wd y), with y = p."""
    one = p.dtype.type(1)
    s["v"] = beta2 * s["v"] + (one - beta2) * g**2
    step = g / (np.sqrt(s["v"] / (one - beta2**t)) + epsilon) + weight_decay * p
    return _schedule_free(p, s, t, step, learning_rate, warmup_steps, beta1, weight_lr_power)


def prodigy(
    params,
    learning_rate=1.0,
    beta1=0.9,
    beta2=0.999,
    beta3=None,
    epsilon=1e-8,
    d0=1e-6,
    d_coef=1.0,
    weight_decay=0.0,
    safeguard_warmup=False,
):
    """Prodigy (Mishchenko and Defazio 2023, Algorithm 4, in optax's form): Adam on d-scaled
    gradients, with the step size d lr sqrt(1 - b2**t) / (1 - b1**t) and d estimated from sums
    over every param: r <- b3 r + (d / d0) dlr <g, x0 - p>; s <- b3 s + dlr d g / d0 (d**2 g / d0
    with safeguard_warmup); d' = max(d, coef r / |s|_1); p <- p - wd dlr p - dlr m / (sqrt(v) + d' eps).
    Not a per-param ``_rule``: its scalars need all the params, so it keeps them itself (in the
    dtype of the first param)."""
    params = [np.array(p, copy=True) for p in params]
    dtype = params[0].dtype.type
    b1, b2, eps, lr, wd = (dtype(x) for x in (beta1, beta2, epsilon, learning_rate, weight_decay))
    b3 = dtype(np.sqrt(beta2) if beta3 is None else beta3)
    d0, coef = dtype(d0), dtype(d_coef)
    state = [{k: np.zeros_like(p) for k in ("m", "v", "s")} | {"x0": p.copy()} for p in params]
    scalars = {"d": d0, "numerator": dtype(0), "t": 0}

    def step(grads):
        scalars["t"] += 1
        t, d, one = dtype(scalars["t"]), scalars["d"], dtype(1)
        grads = [np.asarray(g, dtype=p.dtype) for g, p in zip(grads, params)]
        dlr = d * lr * np.sqrt(one - b2**t) / (one - b1**t)
        inner = sum(np.sum(g * (s["x0"] - p)) for g, p, s in zip(grads, params, state))
        for g, s in zip(grads, state):
            s["m"] = b1 * s["m"] + (one - b1) * d * g
            s["v"] = b2 * s["v"] + (one - b2) * (d * g) ** 2
            s["s"] = b3 * s["s"] + (d if safeguard_warmup else dlr) * d * g / d0
        scalars["numerator"] = b3 * scalars["numerator"] + (d / d0) * dlr * inner
        norm = sum(np.sum(np.abs(s["s"])) for s in state)
        scalars["d"] = new_d = max(d, coef * scalars["numerator"] / norm)
        for i, (p, s) in enumerate(zip(params, state)):
            params[i] = (p - wd * dlr * p - dlr * s["m"] / (np.sqrt(s["v"]) + new_d * eps)).astype(p.dtype)
        return [p.copy() for p in params]

    step.state = state
    step.scalars = scalars
    return step


REFERENCES["prodigy"] = prodigy


def polyak_sgd(
    params, grads, loss, learning_rate=1.0, max_learning_rate=1.0, f_min=0.0, epsilon=0.0, variant="sps"
):
    """One step of SGD with the Polyak step size (Loizou et al. 2021, SPS_max; Garrigos et al. 2023
    for "sps+"), as optax scales it: u = -s g over every param, gamma = min((f - f*) /
    (|u|**2 + epsilon), gamma_max), 0 where |u|**2 + epsilon <= 2.2e-16; p <- p + gamma u. Not in
    REFERENCES: it needs the loss value (and all the params at once)."""
    dtype = params[0].dtype
    us = [-np.asarray(learning_rate, dtype) * np.asarray(g, dtype) for g in grads]
    total = sum(np.sum(u**2) for u in us)
    gap = np.asarray(loss, dtype) - np.asarray(f_min, dtype)
    if variant == "sps+":
        gap = max(gap, 0)
    tiny = total + epsilon <= np.finfo(float).eps
    gamma = 0.0 if tiny else min(gap / (total + epsilon), max_learning_rate)
    return [p + np.asarray(gamma, dtype) * u for p, u in zip(params, us)]


def _ratio(numerator, denominator):
    return numerator / denominator if numerator > 0 and denominator > 0 else 1


@_rule("m", "v", **{**ADAM_DEFAULTS, "epsilon": 1e-6}, weight_decay=0.0)
def lamb(p, g, s, t, learning_rate, beta1, beta2, epsilon, weight_decay):
    """u = mhat / (sqrt(vhat) + eps) + wd p; p <- p - lr (|p| / |u|) u (ratio 1 if a norm is 0)"""
    one = p.dtype.type(1)
    s["m"] = beta1 * s["m"] + (one - beta1) * g
    s["v"] = beta2 * s["v"] + (one - beta2) * g**2
    u = (s["m"] / (one - beta1**t)) / (np.sqrt(s["v"] / (one - beta2**t)) + epsilon) + weight_decay * p
    return p - learning_rate * _ratio(np.linalg.norm(p), np.linalg.norm(u)) * u


@_rule("velocity", learning_rate=0.1, momentum=0.9, weight_decay=0.0, trust_coefficient=1e-3, epsilon=0.0)
def lars(p, g, s, t, learning_rate, momentum, weight_decay, trust_coefficient, epsilon):
    """local = k |p| / (|g| + wd |p| + eps) (1 if a norm is 0); v <- mu v + lr local (g + wd p);
    p <- p - v"""
    p_norm, g_norm = np.linalg.norm(p), np.linalg.norm(g)
    local = _ratio(trust_coefficient * p_norm, g_norm + weight_decay * p_norm + epsilon)
    s["velocity"] = momentum * s["velocity"] + learning_rate * local * (g + weight_decay * p)
    return p - s["velocity"]


def _rms(x):
    return np.sqrt(np.mean(np.square(x)))


@_rule(
    learning_rate=1e-2, beta2_decay=-0.8, epsilon1=None, epsilon2=1e-3, clip_threshold=1.0, weight_decay=0.0
)
def adafactor(p, g, s, t, learning_rate, beta2_decay, epsilon1, epsilon2, clip_threshold, weight_decay):
    """Shazeer and Stern (2018), Algorithms 4 and 5 with beta1 = 0, as torch.optim.Adafactor:
    beta2_t = 1 - t**c; rho = min(lr, 1 / sqrt(t)); alpha = max(eps2, RMS(p)) rho.
    ndim >= 2, over the last two axes: R <- beta2_t R + (1 - beta2_t) mean_cols(g**2),
    C <- beta2_t C + (1 - beta2_t) mean_rows(g**2), V = outer(R, C) / max(mean(R), eps1);
    else V <- beta2_t V + (1 - beta2_t) g**2. U = g / sqrt(max(V, eps1**2));
    p <- p (1 - lr wd) - alpha / max(1, RMS(U) / d) U. Means, not the paper's sums (the same V);
    eps1 floors V rather than being added to g**2 (torch's form). eps1 None (NaN once cast):
    the machine epsilon of p's dtype. Row and column factors kept with torch's shapes."""
    one = p.dtype.type(1)
    if np.isnan(epsilon1):
        epsilon1 = np.finfo(p.dtype).eps
    beta2_t = one - t**beta2_decay
    alpha = max(epsilon2, _rms(p)) * min(learning_rate, one / np.sqrt(t))
    if p.ndim >= 2:
        r = s.setdefault("row_var", np.zeros((*p.shape[:-1], 1), p.dtype))[..., 0]
        c = s.setdefault("col_var", np.zeros((*p.shape[:-2], 1, p.shape[-1]), p.dtype))[..., 0, :]
        r = beta2_t * r + (one - beta2_t) * np.mean(g**2, axis=-1)
        c = beta2_t * c + (one - beta2_t) * np.mean(g**2, axis=-2)
        s["row_var"], s["col_var"] = r[..., :, None], c[..., None, :]
        v = np.einsum("...i,...j->...ij", r, c) / np.maximum(np.mean(r, axis=-1), epsilon1)[..., None, None]
    else:
        v = s["variance"] = beta2_t * s.get("variance", np.zeros_like(p)) + (one - beta2_t) * g**2
    u = g / np.sqrt(np.maximum(v, epsilon1 * epsilon1))
    return p * (one - learning_rate * weight_decay) - alpha / max(one, _rms(u) / clip_threshold) * u


def _newton_schulz(x, coefficients, steps, epsilon):
    """Jordan et al. (2024): X = G / max(||G||_F, eps) on the wide side (transposed when tall),
    then X <- a X + (b A + c A A) X with A = X X^T, ``steps`` times; in x's dtype."""
    a, b, c = (x.dtype.type(k) for k in coefficients)
    tall = x.shape[0] > x.shape[1]
    x = x.T if tall else x
    x = x / max(np.linalg.norm(x), epsilon)
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if tall else x


def muon(
    params,
    learning_rate=1e-3,
    weight_decay=0.1,
    momentum=0.95,
    epsilon=1e-7,
    nesterov=True,
    ns_coefficients=(3.4445, -4.7750, 2.0315),
    ns_steps=5,
    adjust_lr_fn=None,
    fallback=None,
):
    """Muon (Jordan et al. 2024) as torch.optim.Muon: B <- mu B + (1 - mu) g;
    U = (1 - mu) g + mu B (nesterov) or B; O = NS(U); p <- p (1 - lr wd) - lr r O, with
    r = sqrt(max(1, A / B)) or, for "match_rms_adamw", 0.2 sqrt(max(A, B)). Params that are not
    2-D go to the reference of the fallback rule (a partially applied library rule: its name
    and keywords only are read)."""
    params = [np.array(p, copy=True) for p in params]
    mine = [i for i, p in enumerate(params) if p.ndim == 2]
    others = [i for i, p in enumerate(params) if p.ndim != 2]
    if others and fallback is None:
        raise ValueError("muon: params that are not 2-D need a fallback")
    if others:
        keywords = {k: v for k, v in fallback.keywords.items() if k != "clear_nan"}
        other_step = REFERENCES[fallback.func.__name__]([params[i] for i in others], **keywords)
    state = [{"momentum_buffer": np.zeros_like(p)} if p.ndim == 2 else {} for p in params]

    def step(grads):
        if others:
            for i, new in zip(others, other_step([grads[i] for i in others])):
                params[i] = new
                state[i].update(other_step.state[others.index(i)])
        for i in mine:
            p, cast = params[i], params[i].dtype.type
            g = np.asarray(grads[i], dtype=p.dtype)
            lr, wd, mu = cast(learning_rate), cast(weight_decay), cast(momentum)
            s = state[i]
            s["momentum_buffer"] = mu * s["momentum_buffer"] + (cast(1) - mu) * g
            u = (cast(1) - mu) * g + mu * s["momentum_buffer"] if nesterov else s["momentum_buffer"]
            o = _newton_schulz(u, ns_coefficients, ns_steps, cast(epsilon))
            rows, cols = p.shape
            if adjust_lr_fn == "match_rms_adamw":
                ratio = 0.2 * math.sqrt(max(rows, cols))
            else:
                ratio = math.sqrt(max(1, rows / cols))
            params[i] = p * (cast(1) - lr * wd) - lr * cast(ratio) * o
        return [p.copy() for p in params]

    step.state = state
    return step


REFERENCES["muon"] = muon


@_rule(learning_rate=1e-3, epsilon=0.1, n_win=10)
def adagrad_window(p, g, s, t, learning_rate, epsilon, n_win):
    """the squares of the last n_win gradients (zeros before): w[(t - 1) % n_win] <- g**2;
    p <- p - lr g / sqrt(sum(w) + eps)"""
    n_win = int(n_win)
    window = s.setdefault("window", np.zeros((n_win, *p.shape), p.dtype))
    window[(int(t) - 1) % n_win] = g**2
    return p - learning_rate * g / np.sqrt(window.sum(axis=0) + epsilon)


def _float(x):
    x = np.asarray(x)
    return x if np.issubdtype(x.dtype, np.floating) else x.astype(np.float64)


def norm_constraint(x, max_norm, norm_axes=None, epsilon=1e-7):
    """Rescale slices of ``x`` whose norm exceeds ``max_norm``.

    n = sqrt(sum(x**2 over norm_axes, keepdims)); return x * clip(n, 0, max_norm) / (eps + n).
    Default axes: ndim 2 -> (0,); ndim 3, 4, 5 -> all but axis 0; otherwise ValueError.
    """
    x = _float(x)
    if norm_axes is None:
        if x.ndim == 2:
            norm_axes = (0,)
        elif x.ndim in (3, 4, 5):
            norm_axes = tuple(range(1, x.ndim))
        else:
            raise ValueError(f"norm_constraint: no default norm_axes for ndim {x.ndim}; pass norm_axes")
    cast = x.dtype.type
    n = np.sqrt(np.sum(x**2, axis=tuple(np.atleast_1d(norm_axes)), keepdims=True))
    return np.asarray(x * (np.clip(n, 0, cast(max_norm)) / (cast(epsilon) + n)), dtype=x.dtype)


def total_norm_constraint(xs, max_norm, epsilon=1e-7, return_norm=False):
    """Rescale all of ``xs`` together when their joint norm exceeds ``max_norm``.

    n = sqrt(sum over tensors of sum(x**2)); every x <- x * clip(n, 0, max_norm) / (eps + n).
    Returns the list, or ``(list, n)`` when ``return_norm``.
    """
    xs = [_float(x) for x in xs]
    cast = np.result_type(*xs).type
    n = np.sqrt(sum(np.sum(x**2) for x in xs))
    multiplier = np.clip(n, 0, cast(max_norm)) / (cast(epsilon) + n)
    scaled = [np.asarray(x * multiplier, dtype=x.dtype) for x in xs]
    return (scaled, n) if return_norm else scaled


# -- L-BFGS over all params as one vector (Nocedal and Wright 2006, algorithms 7.4 and 7.5; the
# Armijo condition, eq. 3.4; the quadratic interpolation of section 3.5), in float64


def lbfgs_direction(g, pairs):
    """d = -H g by the two-loop recursion over the pairs (s_i, y_i), oldest first.

    q = -g; newest to oldest: a_i = (s_i . q) / (y_i . s_i), q <- q - a_i y_i;
    r = gamma q, gamma = (y . s) / (y . y) of the newest pair (1 without pairs);
    oldest to newest: b_i = (y_i . r) / (y_i . s_i), r <- r + (a_i - b_i) s_i.
    """
    q = -np.asarray(g, dtype=np.float64)
    alphas = []
    for s, y in reversed(pairs):
        alphas.append((s @ q) / (y @ s))
        q = q - alphas[-1] * y
    gamma = (pairs[-1][1] @ pairs[-1][0]) / (pairs[-1][1] @ pairs[-1][1]) if pairs else 1.0
    r = gamma * q
    for (s, y), alpha in zip(pairs, reversed(alphas)):
        r = r + (alpha - (y @ r) / (y @ s)) * s
    return r


def armijo_ladder(phi, f0, slope, t0, ladder=12, shrink=0.5, armijo=1e-4):
    """The step the ladder line search takes along a direction with phi(0) = f0, phi'(0) = slope.

    Candidates t_k = t0 shrink**k, k < ladder; t_j is the first with the Armijo condition
    phi(t) <= f0 + armijo t slope, else the last. t_q = -slope t_j**2 / (2 (phi(t_j) - f0 - slope
    t_j)), the minimum of the parabola through f0, slope and phi(t_j), is taken when that
    denominator is positive, t_q > 0, phi(t_q) meets the condition and lies below phi(t_j) (or no
    candidate met it); else t_j if it met it; else 0 (no step). Returns (t, candidates, met), the
    candidates as (t_k, phi(t_k)).
    """
    candidates = [(t0 * shrink**k, phi(t0 * shrink**k)) for k in range(ladder)]
    met = [value <= f0 + armijo * t * slope for t, value in candidates]
    t, value = candidates[met.index(True)] if any(met) else candidates[-1]
    excess = value - f0 - slope * t
    if excess > 0 and np.isfinite(excess):
        tq = -slope * t * t / (2 * excess)
        if tq > 0:
            at_tq = phi(tq)
            if at_tq <= f0 + armijo * tq * slope and (not any(met) or at_tq < value):
                return tq, candidates, met
    return (t if any(met) else 0.0), candidates, met


def _along(loss, x, d):
    """phi(t) = loss(x + t d)."""
    return lambda t: loss(x + t * d)


def lbfgs(
    loss,
    grad,
    x,
    steps,
    learning_rate=1.0,
    history_size=10,
    tolerance_grad=1e-7,
    tolerance_change=1e-9,
    line_search=None,
    ladder=12,
    shrink=0.5,
    armijo=1e-4,
):
    """Each of ``steps`` calls of L-BFGS on ``loss(x)`` with gradient ``grad(x)``, as a dict: the
    params after it (``x``), the step taken (``t``, 0 for none) and, with the ladder, its search
    (``f0``, ``candidates``, ``met`` as :func:`armijo_ladder` returns them). One call:

    g = grad(x); nothing at all (the call does not count) when max|g| <= tolerance_grad.
    Otherwise the pair (s, y) = (last step, g - previous g) joins the history (the oldest leaves
    beyond history_size) when y . s > 1e-10; d = lbfgs_direction(g, history); t0 = lr min(1,
    1 / sum|g|) on the first call (with the ladder: whenever the history is empty), lr after. A
    step only when g . d <= -tolerance_change: t = t0, or the ladder's choice; with the ladder, a
    call without a step empties the history.
    """
    x = np.array(x, dtype=np.float64)
    pairs, last, previous, trajectory, taken = [], np.zeros_like(x), np.zeros_like(x), [], 0
    for _ in range(steps):
        g = grad(x)
        if np.max(np.abs(g)) <= tolerance_grad:
            trajectory.append({"x": x.copy(), "t": 0.0})
            continue
        y = g - previous
        if y @ last > 1e-10:
            pairs = [*pairs, (last, y)][-history_size:]
        d = lbfgs_direction(g, pairs)
        fresh = taken == 0 or (line_search == "armijo" and not pairs)
        t = t0 = learning_rate * min(1.0, 1.0 / np.abs(g).sum()) if fresh else learning_rate
        descends = g @ d <= -tolerance_change
        record = {}
        if line_search == "armijo":
            t = 0.0
            if descends:
                t, candidates, met = armijo_ladder(
                    _along(loss, x, d), loss(x), g @ d, t0, ladder, shrink, armijo
                )
                record = {"f0": loss(x), "candidates": candidates, "met": met}
            if t == 0:
                pairs = []
        if descends:
            x = x + t * d
        trajectory.append({"x": x.copy(), "t": t if descends else 0.0, **record})
        last, previous, taken = t * d, g, taken + 1
    return trajectory


def plateau_reference(losses, init_value, factor, patience, threshold, cooldown, min_value):
    """The value used at each call, written from torch's documented algorithm (mode min, rel)."""
    value, best, bad, cooling, used = init_value, math.inf, 0, 0, []
    for loss in losses:
        used.append(value)
        if loss < best * (1 - threshold):
            best, bad = loss, 0
        else:
            bad += 1
        if cooling > 0:
            cooling, bad = cooling - 1, 0
        if bad > patience:
            value, cooling, bad = max(value * factor, min_value), cooldown, 0
    return np.array(used)
