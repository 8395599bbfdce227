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


def dadapt_adamw(params, learning_rate=1.0, beta1=0.9, beta2=0.999, epsilon=1e-8, d0=1e-6, weight_decay=0.0):
    """D-Adaptation AdamW (Defazio and Mishchenko 2023, Algorithm 4, with optax's weighting):
    dlr = d lr sqrt(1 - b2**t) / (1 - b1**t), b3 = sqrt(b2); r <- b3 r + (1 - b3) dlr <g, s / (sqrt(v)
    + eps)> (s, v before the step); m <- b1 m + (1 - b1) dlr g; v <- b2 v + (1 - b2) g**2; s <- b3 s
    + (1 - b3) dlr g; d <- max(d, r / ((1 - b3) |s|_1)) (d kept while |s|_1 = 0); p <- p - wd dlr p -
    m / (sqrt(v) + eps). Keeps its scalars itself, in the dtype of the first param."""
    params = [np.array(p, copy=True) for p in params]
    dtype = params[0].dtype.type
    b1, b2, eps, lr, wd = (dtype(x) for x in (beta1, beta2, epsilon, learning_rate, weight_decay))
    b3 = np.sqrt(b2)
    state = [{k: np.zeros_like(p) for k in ("m", "v", "s")} for p in params]
    scalars = {"d": dtype(d0), "numerator": dtype(0), "t": 0}

    def step(grads):
        scalars["t"] += 1
        t, d, one = dtype(scalars["t"]), scalars["d"], dtype(1)
        grads = [np.asarray(g, dtype=p.dtype) for g, p in zip(grads, params)]
        dlr = d * lr * np.sqrt(one - b2**t) / (one - b1**t)
        inner = sum(np.sum(g * s["s"] / (np.sqrt(s["v"]) + eps)) for g, s in zip(grads, state))
        for g, s in zip(grads, state):
            s["m"] = b1 * s["m"] + (one - b1) * dlr * g
            s["v"] = b2 * s["v"] + (one - b2) * g**2
            s["s"] = b3 * s["s"] + (one - b3) * dlr * g
        scalars["numerator"] = b3 * scalars["numerator"] + (one - b3) * dlr * inner
        norm = sum(np.sum(np.abs(s["s"])) for s in state)
        if norm > 0:
            scalars["d"] = max(d, scalars["numerator"] / ((one - b3) * norm))
        for i, (p, s) in enumerate(zip(params, state)):
            params[i] = (p - wd * dlr * p - s["m"] / (np.sqrt(s["v"]) + eps)).astype(p.dtype)
        return [p.copy() for p in params]

    step.state = state
    step.scalars = scalars
    return step


REFERENCES["dadapt_adamw"] = dadapt_adamw


@_rule("w1", "theta", "L", "G", "reward", learning_rate=1.0, alpha=100.0, epsilon=1e-8, weight_decay=0.0)
def cocob(p, g, s, t, learning_rate, alpha, epsilon, weight_decay):
    """COCOB-Backprop (Orabona and Tommasi 2017, Algorithm 2) on the negative gradient c = -lr (g +
    wd p): L <- max(L, |c|) (L = eps at first); G <- G + |c|; reward <- max(reward + (w - w1) c, 0);
    theta <- theta + c; w <- w1 + theta / (L max(G + L, alpha L)) (L + reward)."""
    if t == 1:
        s["w1"], s["L"] = p.copy(), np.full_like(p, epsilon)
    c = -learning_rate * (g + weight_decay * p)
    s["L"] = np.maximum(s["L"], np.abs(c))
    s["G"] = s["G"] + np.abs(c)
    s["reward"] = np.maximum(s["reward"] + (p - s["w1"]) * c, 0)
    s["theta"] = s["theta"] + c
    bet = s["theta"] / (s["L"] * np.maximum(s["G"] + s["L"], alpha * s["L"]))
    return s["w1"] + bet * (s["L"] + s["reward"])


def _distance_rule(params, learning_rate, weight_decay, rate):
    """SGD with a step size from all the params: ``rate(x, x0, u, t)`` gives it from the params,
    the initial params and the (decayed) gradients u = g + wd p, in the dtype of the first param."""
    params = [np.array(p, copy=True) for p in params]
    dtype = params[0].dtype.type
    lr, wd = dtype(learning_rate), dtype(0.0 if weight_decay is None else weight_decay)
    x0 = [p.copy() for p in params]
    counter = {"t": 0}

    def step(grads):
        counter["t"] += 1
        us = [np.asarray(g, dtype=p.dtype) + wd * p for g, p in zip(grads, params)]
        eta = rate(params, x0, us, counter["t"])
        for i, (p, u) in enumerate(zip(params, us)):
            params[i] = (p - lr * eta * u).astype(p.dtype)
        return [p.copy() for p in params]

    return step


def _norm2(xs):
    return sum(np.sum(np.square(x)) for x in xs)


def dog(params, learning_rate=1.0, init_step=("heuristic", 1e-6), epsilon=1e-8, weight_decay=None):
    """DoG (Ivgi et al. 2023, Algorithm 1): r_bar = max(r_eps, max_k |x_k - x_0|); G = sum_k |g_k|**2;
    x <- x - lr (r_bar / sqrt(G + eps)) g, the norms over all the params; r_eps = value for
    ("distance", value), value (1 + |x_0|) for ("heuristic", value); for ("learning_rate", value)
    r_eps = 0 and the first step size is value."""
    kind, value = init_step
    dtype = np.asarray(params[0]).dtype.type
    eps = dtype(epsilon)
    r_eps = {"distance": value, "heuristic": value * (1 + np.sqrt(_norm2(params))), "learning_rate": 0.0}
    scalars = {"r_bar": dtype(r_eps[kind]), "G": dtype(0)}

    def rate(xs, x0, us, t):
        scalars["r_bar"] = max(scalars["r_bar"], np.sqrt(_norm2([x - a for x, a in zip(xs, x0)])))
        scalars["G"] = scalars["G"] + _norm2(us)
        if kind == "learning_rate" and t == 1:
            return dtype(value)
        return scalars["r_bar"] / np.sqrt(scalars["G"] + eps)

    step = _distance_rule(params, learning_rate, weight_decay, rate)
    step.scalars = scalars
    return step


REFERENCES["dog"] = dog


def dowg(params, learning_rate=1.0, init_estim_sq_dist=None, epsilon=1e-4, weight_decay=None):
    """DoWG (Khaled et al. 2023, Algorithm 1, with optax's eps): r2 = max(r2, |x - x_0|**2) (r2 =
    init_estim_sq_dist, or eps, at first); v <- v + r2 |g|**2; x <- x - lr (r2 / (sqrt(v) + eps)) g,
    the norms over all the params."""
    dtype = np.asarray(params[0]).dtype.type
    eps = dtype(epsilon)
    scalars = {"r2": dtype(epsilon if init_estim_sq_dist is None else init_estim_sq_dist), "v": dtype(0)}

    def rate(xs, x0, us, t):
        scalars["r2"] = max(scalars["r2"], _norm2([x - a for x, a in zip(xs, x0)]))
        scalars["v"] = scalars["v"] + scalars["r2"] * _norm2(us)
        return scalars["r2"] / (np.sqrt(scalars["v"]) + eps)

    step = _distance_rule(params, learning_rate, weight_decay, rate)
    step.scalars = scalars
    return step


REFERENCES["dowg"] = dowg


@_rule(
    "m", "s", learning_rate=1e-3, beta1=0.9, beta2=0.999, epsilon=1e-16, epsilon_root=1e-16, weight_decay=0.0
)
def acprop(p, g, s, t, learning_rate, beta1, beta2, epsilon, epsilon_root, weight_decay):
    """ACProp (Zhuang et al. 2021, Algorithm 2): the step divides g_t by the root of the
    bias-corrected s_{t-1} (1 on the first step); s_t = b2 s_{t-1} + (1 - b2) (g_t - m_{t-1})**2
    + eps_root (around the previous average, as optax's code; its docstring has m_t); m_t = b1 m_{t-1}
    + (1 - b1) g_t; p <- p - lr (g / (sqrt(s_hat) + eps) + wd p)."""
    one = p.dtype.type(1)
    s_hat = one if t == one else s["s"] / (one - beta2 ** (t - one))
    step = g / (np.sqrt(s_hat) + epsilon)
    s["s"] = beta2 * s["s"] + (one - beta2) * (g - s["m"]) ** 2 + epsilon_root
    s["m"] = beta1 * s["m"] + (one - beta1) * g
    return p - learning_rate * (step + weight_decay * p)


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


def sam(params, gradient, base, rho=0.05):
    """Sharpness-aware minimization (Foret et al. 2021, Algorithm 1), one step per call:
    e = rho g / |g| (|g| over every param; e = 0 where |g| = 0), g_sam = grad L(p + e), then the
    base rule's step with g_sam. ``gradient(params) -> grads`` is the loss's gradient (SAM
    evaluates it twice a step), ``base`` a reference step (``REFERENCES[name](params, **hyper)``),
    which sees the same params since SAM moves them by the base rule's step alone. Not in
    REFERENCES: it needs the loss's gradient at other params than the current ones."""
    params = [np.array(p, copy=True) for p in params]

    def step():
        g = [np.asarray(x, p.dtype) for x, p in zip(gradient(params), params)]
        norm = np.sqrt(sum(np.sum(np.square(x.astype(np.float64))) for x in g))
        scale = rho / norm if norm > 0 else 0.0
        perturbed = [p + (p.dtype.type(scale) * x).astype(p.dtype) for p, x in zip(params, g)]
        params[:] = base(gradient(perturbed))
        return [p.copy() for p in params]

    return step


def mechanize(params, base, weight_decay=1e-2, epsilon=1e-8, s_init=1e-6, num_betas=6):
    """Mechanic (Cutkosky, Defazio and Mehta 2023, Algorithm 1 in its memory-saving form, with the
    weight decay of the raw gradients and the clip of h to +-m of the authors' optax code):
    u the base rule's step; S = sum(s); g~ = g + wd S |g| / (|p| + eps) p; D_prev = (x0 - p) /
    (S + eps); D = D_prev - u; h = <g~, D_prev>; per beta_k = 1 - 10**-k: m <- max(beta m, |h| +
    eps), v <- beta**2 v + h**2, r <- beta r + clip(h, -m_old, m_old) s, s <- ((s_init / n) m +
    max(r, 0)) / (sqrt(v) + eps); p <- x0 - sum(s) D. Norms and sums over every param (float64
    here). ``base`` a reference step; its step u is the difference of its own successive params
    (its rule's step must not depend on the params: sgd, momentum, adam). The state is
    ``step.state``: x0 per param, and r, m, v, s."""
    params = [np.array(p, copy=True) for p in params]
    x0 = [p.copy() for p in params]
    n = num_betas
    state = dict(r=np.zeros(n), m=np.zeros(n), v=np.zeros(n), s=np.full(n, s_init), x0=x0)
    betas = np.array([1 - 0.1**k for k in range(1, n + 1)])
    previous = [p.copy() for p in params]

    def step(grads):
        nonlocal previous
        g = [np.asarray(x, np.float64) for x in grads]
        moved = base(grads)
        u = [a - b for a, b in zip(moved, previous)]
        previous = moved
        total = state["s"].sum()
        g_norm = np.sqrt(sum(np.sum(x**2) for x in g))
        p_norm = np.sqrt(sum(np.sum(p**2) for p in params))
        decayed = [x + weight_decay * total * g_norm / (p_norm + epsilon) * p for x, p in zip(g, params)]
        d_prev = [(a - p) / (total + epsilon) for a, p in zip(x0, params)]
        h = sum(np.sum(x * d) for x, d in zip(decayed, d_prev))
        clipped = np.clip(h, -state["m"], state["m"])
        state["m"] = np.maximum(betas * state["m"], abs(h) + epsilon)
        state["v"] = betas**2 * state["v"] + h**2
        state["r"] = betas * state["r"] + clipped * state["s"]
        state["s"] = ((s_init / n) * state["m"] + np.maximum(state["r"], 0)) / (np.sqrt(state["v"]) + epsilon)
        params[:] = [a - state["s"].sum() * (d - du) for a, d, du in zip(x0, d_prev, u)]
        return [p.copy() for p in params]

    step.state = state
    return step


def _momo_family(params, adam, learning_rate, beta1, beta2, epsilon, lower_bound, weight_decay, adapt):
    """MoMo and MoMo-Adam (Schaipp et al. 2024, Algorithms 1 and 2 with decoupled weight decay and
    the lower-bound estimate of their Section 5). ``step(grads, loss)``; sums over every param;
    the state is ``step.state`` (per param m and v) and ``step.scalars`` (barf, gamma, lb, t)."""
    params = [np.array(p, copy=True) for p in params]
    state = [{"m": np.zeros_like(p), "v": np.zeros_like(p)} for p in params]
    scalars = {"barf": 0.0, "gamma": 0.0, "lb": float(lower_bound), "t": 0}
    lr, wd, f0 = float(learning_rate), float(weight_decay), float(lower_bound)

    def step(grads, loss):
        scalars["t"] += 1
        t = scalars["t"]
        grads = [np.asarray(g, p.dtype) for g, p in zip(grads, params)]
        # MoMo starts its averages at the first values (weight 0 on the empty past); MoMo-Adam
        # starts them at zero and corrects their bias by b1 = 1 - beta1**t.
        beta = beta1 if (adam or t > 1) else 0.0
        bias = 1 - beta1**t if adam else 1.0
        scalars["barf"] = beta * scalars["barf"] + (1 - beta) * float(loss)
        scalars["gamma"] = beta * scalars["gamma"] + (1 - beta) * sum(
            float(np.sum(g * p)) for g, p in zip(grads, params)
        )
        precond = []
        for s, g in zip(state, grads):
            s["m"] = beta * s["m"] + (1 - beta) * g
            if adam:
                s["v"] = beta2 * s["v"] + (1 - beta2) * g**2
                precond.append(epsilon + np.sqrt(s["v"] / (1 - beta2**t)))
            else:
                precond.append(np.ones_like(g))
        norm = sum(float(np.sum(s["m"] ** 2 / d)) for s, d in zip(state, precond))
        inner = sum(float(np.sum(s["m"] * p)) for s, p in zip(state, params))
        decay = 1 + lr * wd
        barf, gamma = scalars["barf"], scalars["gamma"]
        lb = scalars["lb"]
        if adapt:
            cap = decay * (barf - gamma) + inner
            if cap < decay * bias * lb:
                lb = max(cap / (2 * bias * decay), f0)
        tau = 0.0
        if norm > np.finfo(float).eps:
            tau = min(lr / bias, max(decay * (barf - bias * lb - gamma) + inner, 0.0) / norm)
        if adapt:
            lb = max((barf + inner - gamma - 0.5 * tau * norm) / bias, f0)
        scalars["lb"] = lb
        for i, (p, s, d) in enumerate(zip(params, state, precond)):
            params[i] = (p - (lr * wd / decay) * p - tau * s["m"] / d).astype(p.dtype)
        return [p.copy() for p in params]

    step.state = state
    step.scalars = scalars
    return step


def momo(params, learning_rate=1.0, beta=0.9, lower_bound=0.0, weight_decay=0.0, adapt_lower_bound=False):
    """MoMo: d = beta d + (1 - beta) g, fbar, gamma likewise (averages starting at the first
    values); tau = min(lr, ((1 + lr wd)(fbar - f* - gamma) + <d, p>)_+ / |d|**2), 0 where |d|**2
    <= 2.2e-16; p <- p - lr wd / (1 + lr wd) p - tau d. Not in REFERENCES: it needs the loss."""
    return _momo_family(
        params, False, learning_rate, beta, 0.0, 0.0, lower_bound, weight_decay, adapt_lower_bound
    )


def momo_adam(
    params,
    learning_rate=1e-2,
    beta1=0.9,
    beta2=0.999,
    epsilon=1e-8,
    lower_bound=0.0,
    weight_decay=0.0,
    adapt_lower_bound=False,
):
    """MoMo-Adam: Adam's m, v; D = eps + sqrt(v / (1 - b2**t)); fbar, gamma averaged by b1 from 0;
    tau = min(lr / b1t, ((1 + lr wd)(fbar - b1t f* - gamma) + <m, p>)_+ / <m, m / D>), b1t = 1 -
    b1**t; p <- p - lr wd / (1 + lr wd) p - tau m / D. Not in REFERENCES: it needs the loss."""
    return _momo_family(
        params, True, learning_rate, beta1, beta2, epsilon, lower_bound, weight_decay, adapt_lower_bound
    )


def hutchinson_signs(seed, index, step, shape):
    """The random signs updates.sophia draws for params[index] on step ``step`` (1 on the first),
    its documented hash: x = (seed + 1000003 index + 7919 (step mod M) + 65537 element) mod M,
    then four rounds of x <- (x**2 + k) mod M, sign 1 - 2 (x mod 2), M = 2**31 - 1."""
    modulus = 2**31 - 1
    element = np.arange(int(np.prod(shape, dtype=np.int64)), dtype=np.int64).reshape(shape)
    x = (seed + 1_000_003 * index + 7_919 * (step % modulus)) % modulus
    x = (x + 65_537 * element) % modulus
    for k in (12_345, 678_901, 2_345_678, 90_123_457):
        x = (x * x + k) % modulus
    return (1 - 2 * (x % 2)).astype(np.float64)


def sophia(
    params,
    learning_rate=1e-4,
    beta1=0.965,
    beta2=0.99,
    epsilon=1e-8,
    weight_decay=1e-4,
    gamma=0.01,
    clip_threshold=1.0,
    update_interval=10,
):
    """Sophia (Liu et al. 2024, Algorithm 3, with Adam's bias correction of m as optax):
    m <- b1 m + (1 - b1) g; r = clip(m / (1 - b1**t) / max(gamma h, eps), +-c) with h of the
    steps before; h <- b2 h + (1 - b2) hhat on steps t = 1, k + 1, 2k + 1...; p <- p - lr (r +
    wd p). ``step(grads, estimates)``: ``estimates`` the Hessian-diagonal estimates hhat of this
    step (read on the refreshing steps only). The state is ``step.state`` (m, h per param)."""
    params = [np.array(p, copy=True) for p in params]
    state = [{"m": np.zeros_like(p), "h": np.zeros_like(p)} for p in params]
    t = 0

    def step(grads, estimates):
        nonlocal t
        t += 1
        for i, (p, s, g, e) in enumerate(zip(params, state, grads, estimates)):
            s["m"] = beta1 * s["m"] + (1 - beta1) * np.asarray(g, p.dtype)
            r = s["m"] / (1 - beta1**t) / np.maximum(gamma * s["h"], epsilon)
            if clip_threshold is not None:
                r = np.clip(r, -clip_threshold, clip_threshold)
            if (t - 1) % update_interval == 0:
                s["h"] = beta2 * s["h"] + (1 - beta2) * np.asarray(e, p.dtype)
            params[i] = (p - learning_rate * (r + weight_decay * p)).astype(p.dtype)
        return [p.copy() for p in params]

    step.state = state
    return step


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


@_rule(learning_rate=0.1, momentum=0.9)
def sm3(p, g, s, t, learning_rate, momentum):
    """SM3-II (Anil et al. 2019, Algorithm SM3-II) with the cover of a tensor by the slices of
    each axis, eps = 1e-8 and momentum as optax adds it: nu'(i) = g(i)**2 + min over the slices
    r through i of mu(r); mu(r) <- max over i in r of nu'(i); u = g / sqrt(nu' + eps) (0 where
    nu' = 0); n <- beta n + (1 - beta) u; p <- p - lr n. A vector or a scalar: one slice per
    element (Adagrad). Accumulators kept with the other dimensions as 1."""
    one = p.dtype.type(1)
    eps = p.dtype.type(1e-8)
    s.setdefault("nu", np.zeros_like(p))
    if p.ndim >= 2:
        covers = []
        for i in range(p.ndim):
            shape = tuple(n if j == i else 1 for j, n in enumerate(p.shape))
            covers.append(s.setdefault(f"mu_{i}", np.zeros(shape, p.dtype)))
        nu_prime = g**2 + np.minimum.reduce(np.broadcast_arrays(*covers))
        for i in range(p.ndim):
            others = tuple(j for j in range(p.ndim) if j != i)
            s[f"mu_{i}"] = np.max(nu_prime, axis=others, keepdims=True)
    else:
        nu_prime = g**2 + s.setdefault("mu", np.zeros_like(p))
        s["mu"] = nu_prime
    with np.errstate(divide="ignore", invalid="ignore"):
        u = np.where(nu_prime == 0, 0, g / np.sqrt(nu_prime + eps)).astype(p.dtype)
    s["nu"] = momentum * s["nu"] + (one - momentum) * u
    return p - learning_rate * s["nu"]


def _signed(vectors):
    """Singular vectors (columns) signed so that the entry of largest magnitude is positive."""
    positive = vectors.max(axis=0) >= -vectors.min(axis=0)
    return vectors * np.where(positive, 1, -1).astype(vectors.dtype)


@_rule(
    learning_rate=1e-2,
    rank=128,
    update_proj_gap=200,
    scale=1.0,
    weight_decay=0.0,
    beta1=0.9,
    beta2=0.999,
    epsilon=1e-8,
)
def galore(p, g, s, t, learning_rate, rank, update_proj_gap, scale, weight_decay, beta1, beta2, epsilon):
    """GaLore (Zhao et al. 2024, Algorithm 2) with Adam: for a matrix G (m x n), every T steps
    from the first, P = the first r = min(rank, m, n) left singular vectors of G if m >= n, else
    its first r right singular vectors (optax's choice of side), each signed so that its largest
    entry is positive; R = P^T G (or G P); M, V Adam's moments of R, N = Mhat / (sqrt(Vhat) + eps);
    p <- p - lr (scale P N (or scale N P^T) + wd p). Other params: Adam on g, not scaled."""
    one = p.dtype.type(1)
    left = p.ndim == 2 and p.shape[0] >= p.shape[1]
    if p.ndim == 2:
        if (int(t) - 1) % int(update_proj_gap) == 0:
            r = min(int(rank), *p.shape)
            u, _, vt = np.linalg.svd(g, full_matrices=False)
            s["projector"] = _signed(u[:, :r] if left else vt[:r, :].T)
        projector = s["projector"]
        low_rank = projector.T @ g if left else g @ projector
    else:
        low_rank = g
    s["m"] = beta1 * s.get("m", 0) + (one - beta1) * low_rank
    s["v"] = beta2 * s.get("v", 0) + (one - beta2) * low_rank**2
    n = (s["m"] / (one - beta1**t)) / (np.sqrt(s["v"] / (one - beta2**t)) + epsilon)
    if p.ndim == 2:
        n = scale * (projector @ n if left else n @ projector.T)
    return p - learning_rate * (n + weight_decay * p)


def _newton_schulz(x, coefficients, steps, epsilon, add_epsilon=False):
    """Jordan et al. (2024): X = G / max(||G||_F, eps) on the wide side (transposed when tall),
    then X <- a X + (b A + c A A) X with A = X X^T, ``steps`` times; in x's dtype.
    ``add_epsilon``: X = G / (||G||_F + eps), as in Keller Jordan's modded-nanogpt."""
    a, b, c = (x.dtype.type(k) for k in coefficients)
    tall = x.shape[0] > x.shape[1]
    x = x.T if tall else x
    x = x / (np.linalg.norm(x) + epsilon if add_epsilon else max(np.linalg.norm(x), epsilon))
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
    form="torch",
):
    """Muon (Jordan et al. 2024) as torch.optim.Muon: B <- mu B + (1 - mu) g;
    U = (1 - mu) g + mu B (nesterov) or B; O = NS(U); p <- p (1 - lr wd) - lr r O, with
    r = sqrt(max(1, A / B)) or, for "match_rms_adamw", 0.2 sqrt(max(A, B)). Params that are not
    2-D go to the reference of the fallback rule (a partially applied library rule: its name
    and keywords only are read).

    ``form="optax"``: modded-nanogpt's Muon as optax writes it, a JAX weight being (fan_in,
    fan_out): B bias-corrected, U = mu B / (1 - mu^(t+1)) + (1 - mu) g / (1 - mu^t) (nesterov)
    or B / (1 - mu^t); NS from G / (||G|| + eps); r = sqrt(max(1, fan_out / fan_in)) = sqrt(max(1,
    B / A)); p <- p - lr (r O + wd p); without a fallback, the other params take Adam (Kingma and
    Ba, b1 0.9, b2 0.999, eps muon's) with Dozat's Nesterov form m_hat = b1 m / (1 - b1^(t+1)) +
    (1 - b1) g / (1 - b1^t) if nesterov."""
    optax_form = form == "optax"
    params = [np.array(p, copy=True) for p in params]
    mine = [i for i, p in enumerate(params) if p.ndim == 2]
    others = [i for i, p in enumerate(params) if p.ndim != 2]
    if others and fallback is None and not optax_form:
        raise ValueError("muon: params that are not 2-D need a fallback")
    if others and fallback is not None:
        keywords = {k: v for k, v in fallback.keywords.items() if k != "clear_nan"}
        other_step = REFERENCES[fallback.func.__name__]([params[i] for i in others], **keywords)
    elif others:
        other_step = _nesterov_adam([params[i] for i in others], learning_rate, epsilon, nesterov)
    state = [{"momentum_buffer": np.zeros_like(p)} if p.ndim == 2 else {} for p in params]
    t = 0

    def step(grads):
        nonlocal t
        t += 1
        if others:
            for i, new in zip(others, other_step([grads[i] for i in others])):
                params[i] = new
                state[i].update(other_step.state[others.index(i)])
        for i in mine:
            p, cast = params[i], params[i].dtype.type
            g = np.asarray(grads[i], dtype=p.dtype)
            lr, wd, mu, one = cast(learning_rate), cast(weight_decay), cast(momentum), cast(1)
            s = state[i]
            s["momentum_buffer"] = mu * s["momentum_buffer"] + (one - mu) * g
            b = s["momentum_buffer"]
            if optax_form:
                u = mu * b / (one - mu ** cast(t + 1)) + (one - mu) * g / (one - mu ** cast(t))
                u = u if nesterov else b / (one - mu ** cast(t))
            else:
                u = (one - mu) * g + mu * b if nesterov else b
            o = _newton_schulz(u, ns_coefficients, ns_steps, cast(epsilon), add_epsilon=optax_form)
            rows, cols = p.shape
            if adjust_lr_fn == "match_rms_adamw":
                ratio = 0.2 * math.sqrt(max(rows, cols))
            elif optax_form:
                ratio = math.sqrt(max(1, cols / rows))
            else:
                ratio = math.sqrt(max(1, rows / cols))
            if optax_form:
                params[i] = p - lr * (cast(ratio) * o + wd * p)
            else:
                params[i] = p * (one - lr * wd) - lr * cast(ratio) * o
        return [p.copy() for p in params]

    step.state = state
    return step


REFERENCES["muon"] = muon


def _nesterov_adam(params, learning_rate, epsilon, nesterov, beta1=0.9, beta2=0.999):
    """Adam (Kingma and Ba 2015) with epsilon after bias correction and, if ``nesterov``,
    Dozat's (2016) look-ahead with a constant beta1: m_hat = b1 m / (1 - b1^(t+1)) + (1 - b1) g /
    (1 - b1^t); p <- p - lr m_hat / (sqrt(v / (1 - b2^t)) + eps). State "m" and "v"."""
    params = [np.array(p, copy=True) for p in params]
    state = [{"m": np.zeros_like(p), "v": np.zeros_like(p)} for p in params]
    t = 0

    def step(grads):
        nonlocal t
        t += 1
        for i, p in enumerate(params):
            cast = p.dtype.type
            b1, b2, one, g = cast(beta1), cast(beta2), cast(1), np.asarray(grads[i], dtype=p.dtype)
            s = state[i]
            s["m"] = b1 * s["m"] + (one - b1) * g
            s["v"] = b2 * s["v"] + (one - b2) * g * g
            if nesterov:
                m_hat = b1 * s["m"] / (one - b1 ** cast(t + 1)) + (one - b1) * g / (one - b1 ** cast(t))
            else:
                m_hat = s["m"] / (one - b1 ** cast(t))
            v_hat = s["v"] / (one - b2 ** cast(t))
            params[i] = p - cast(learning_rate) * m_hat / (np.sqrt(v_hat) + cast(epsilon))
        return [p.copy() for p in params]

    step.state = state
    return step


def dpsgd(params, learning_rate=0.15, l2_norm_clip=1.0, noise_multiplier=1.1, momentum=None, nesterov=False):
    """DP-SGD (Abadi et al. 2016, Algorithm 1), with the heavy-ball trace of optax's ``trace``:
    each example's gradient (over all params together) is scaled to norm at most C,
    g_b / max(1, |g_b| / C); the scaled gradients are summed, N(0, (sigma C)^2) noise is added
    and the sum divided by the batch size B: gbar = (sum_b clip(g_b) + sigma C z) / B. Then
    tau <- gbar + mu tau, u = gbar + mu tau (nesterov) or tau, or u = gbar without momentum;
    p <- p - lr u. ``step(per_example, noise=None)``: per_example[i] has shape (B, *p_i.shape);
    noise[i] the standard normal draws z for param i (zeros if None)."""
    params = [np.array(p, copy=True) for p in params]
    state = [{"trace": np.zeros_like(p)} if momentum is not None else {} for p in params]

    def step(per_example, noise=None):
        per_example = [np.asarray(g, dtype=p.dtype) for g, p in zip(per_example, params)]
        batch = per_example[0].shape[0]
        norms = np.sqrt(sum(np.sum(g.reshape(batch, -1) ** 2, axis=1) for g in per_example))
        for i, p in enumerate(params):
            cast = p.dtype.type
            g = per_example[i]
            scales = np.array([cast(1) / max(cast(1), n / cast(l2_norm_clip)) if n > 0 else 1 for n in norms])
            clipped = np.sum(scales.reshape((batch,) + (1,) * p.ndim).astype(p.dtype) * g, axis=0)
            z = np.zeros_like(p) if noise is None else np.asarray(noise[i], dtype=p.dtype)
            gbar = (clipped + cast(noise_multiplier) * cast(l2_norm_clip) * z) / cast(batch)
            if momentum is None:
                u = gbar
            else:
                mu = cast(momentum)
                state[i]["trace"] = gbar + mu * state[i]["trace"]
                u = gbar + mu * state[i]["trace"] if nesterov else state[i]["trace"]
            params[i] = p - cast(learning_rate) * u
        return [p.copy() for p in params]

    step.state = state
    return step


REFERENCES["dpsgd"] = dpsgd


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
