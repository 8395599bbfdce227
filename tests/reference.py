"""Plain-NumPy reference implementations of the update rules, Lasagne formulation.

Written from the published equations, independent of the library. Each rule is a
factory ``REFERENCES[name](params, **hyper)`` returning ``step(grads) -> new params``.
The reference keeps its own copies of the parameters and of its state; it never
mutates the caller's arrays.

Numerics: everything is computed in each parameter's own dtype. Hyperparameters are
cast to that dtype first, ``1 - beta`` is computed in it, and the integer step count
``t`` (1 on the first step) is cast to it before any power. State starts at zero.
"""

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


@_rule("accu", learning_rate=1.0, rho=0.9, epsilon=1e-6)
def rmsprop(p, g, s, t, learning_rate, rho, epsilon):
    """a <- rho * a + (1 - rho) * g**2; p <- p - lr * g / sqrt(a + eps)"""
    one = p.dtype.type(1)
    s["accu"] = rho * s["accu"] + (one - rho) * g**2
    return p - learning_rate * g / np.sqrt(s["accu"] + epsilon)


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
