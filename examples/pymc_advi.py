"""Fit a small Bayesian model with PyMC's ADVI using optimizers from `updates`, next to PyMC's own.

A Bayesian linear regression on simulated data (seeded, no download) is fitted with
``pm.fit(method="advi", obj_optimizer=...)`` once with each optimizer from `updates` and once
with PyMC's optimizer of the same name, from the same random seed: ADVI then draws the same
Monte Carlo samples, so equal algorithms give equal traces of the ELBO. The script prints, per
pair, the largest difference between the two traces (relative to the ELBO's size), the
difference between the fitted means and standard deviations, and the time per iteration.

Then two learning rates that change as the fit goes, both inside the compiled step:

- a schedule of the step as a hyperparameter, through ``pm.fit`` unchanged:
  ``obj_optimizer=updates.adam(learning_rate=updates.cosine_decay(...))``;
- ``updates.reduce_on_plateau`` built without a loss, which watches the loss of the rule it is
  given to. ``pm.fit`` hands its optimizer the gradients of the ELBO, not the ELBO itself, so
  there the rule has no loss to hand over (and says so); the script builds ADVI's step itself
  instead, giving the rule the negative ELBO that PyMC's step computes (one Monte Carlo
  sample), compiled with PyMC's ``compile`` as ``pm.fit`` does.

    python examples/pymc_advi.py [--iterations 3000] [--seed 20]

Needs PyMC (``pip install -e ".[pymc]"``), which pins its own PyTensor (2.38.x).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import numpy as np

import updates

try:
    import pymc as pm
except ImportError as err:  # a clear message instead of a traceback
    raise SystemExit(f"examples/pymc_advi.py needs PyMC ({err}): pip install -e '.[pymc]'") from err

# Each optimizer from `updates` and PyMC's own, with the same hyperparameters.
PAIRS = {
    "adam": (updates.adam(learning_rate=0.05), pm.adam(learning_rate=0.05)),
    "adagrad_window": (
        updates.adagrad_window(learning_rate=0.05, n_win=10),
        pm.adagrad_window(learning_rate=0.05, n_win=10),
    ),
}


def cosine_schedule(iterations: int) -> updates.cosine_decay:
    """The learning rate of the scheduled fit: 0.05 down to 0.005 over the fit."""
    return updates.cosine_decay(init_value=0.05, decay_steps=iterations, alpha=0.1)


def plateau_rate() -> updates.reduce_on_plateau:
    """The learning rate of the plateau fit: 0.05, halved after 60 iterations without a new best
    -ELBO (the estimate is noisy: a long patience), never below 0.005; no loss given."""
    return updates.reduce_on_plateau(init_value=0.05, factor=0.5, patience=60, min_value=0.005)


def regression_model(n_points: int = 100, seed: int = 0) -> pm.Model:
    """y = a + b·x + noise, with priors on a, b and the noise scale; data simulated from `seed`."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n_points)
    y = 1.0 + 2.0 * x + rng.normal(scale=0.5, size=n_points)
    with pm.Model() as model:
        intercept = pm.Normal("intercept", 0.0, 10.0)
        slope = pm.Normal("slope", 0.0, 10.0)
        sigma = pm.HalfNormal("sigma", 1.0)
        pm.Normal("y", intercept + slope * x, sigma, observed=y)
    return model


@dataclass
class Fit:
    """One ADVI run: the loss trace (the negative ELBO per iteration) and the fitted Gaussian."""

    loss: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    seconds_per_iteration: float


def fit(model: pm.Model, optimizer, iterations: int, seed: int) -> Fit:
    """Run ADVI on `model` with `optimizer` for `iterations` steps from `seed`."""
    clock = []  # the time after each iteration: the compile before the first is not counted
    with model:
        approx = pm.fit(
            iterations,
            method="advi",
            obj_optimizer=optimizer,
            random_seed=seed,
            progressbar=False,
            callbacks=[lambda approx, losses, i: clock.append(time.perf_counter())],
        )
    return Fit(
        loss=np.asarray(approx.hist),
        mean=approx.mean.get_value(),
        std=approx.std.eval(),
        seconds_per_iteration=(clock[-1] - clock[0]) / max(len(clock) - 1, 1),
    )


@dataclass
class PlateauFit:
    """ADVI with a reduce_on_plateau learning rate: the loss trace, the rate each iteration used,
    and the fitted Gaussian."""

    loss: np.ndarray
    rates: np.ndarray
    mean: np.ndarray
    std: np.ndarray


def fit_on_plateau(model: pm.Model, iterations: int, seed: int) -> PlateauFit:
    """ADVI on `model`, the learning rate cut when the negative ELBO stops improving.

    The optimizer is built as for ``pm.fit`` (hyperparameters only, the plateau without a loss)
    and given the negative ELBO itself, which it hands to the plateau schedule.
    """
    with model:
        advi = pm.ADVI(random_seed=seed)
    loss = advi.objective(None)  # the negative ELBO of one Monte Carlo sample, as pm.fit's step
    optimizer = updates.adam(learning_rate=plateau_rate())
    step_updates = optimizer(loss, advi.approx.params)
    rate = step_updates.hyperparameters["learning_rate"]
    step = pm.pytensorf.compile([], [loss, rate], updates=step_updates, random_seed=seed)
    trace = np.array([step() for _ in range(iterations)])
    return PlateauFit(trace[:, 0], trace[:, 1], advi.approx.mean.get_value(), advi.approx.std.eval())


@dataclass
class Comparison:
    """How far the trace and the result with `updates` are from those with PyMC's optimizer."""

    name: str
    ours: Fit
    theirs: Fit

    @property
    def trace_difference(self) -> float:
        """max_i |loss_i - loss'_i| / max_i |loss'_i|: the traces' largest relative gap."""
        return float(np.max(np.abs(self.ours.loss - self.theirs.loss)) / np.max(np.abs(self.theirs.loss)))

    @property
    def mean_difference(self) -> float:
        return float(np.max(np.abs(self.ours.mean - self.theirs.mean)))

    @property
    def std_difference(self) -> float:
        return float(np.max(np.abs(self.ours.std - self.theirs.std)))


def compare(
    names=tuple(PAIRS), iterations: int = 3000, seed: int = 20, per_parameter: bool = False
) -> list[Comparison]:
    """Fit the model with each named pair of optimizers from the same seed."""
    model = regression_model()
    results = []
    for name in names:
        ours, theirs = PAIRS[name]
        with updates.per_parameter(per_parameter):
            first = fit(model, ours, iterations, seed)
        results.append(Comparison(name, first, fit(model, theirs, iterations, seed)))
    return results


def report(results: list[Comparison]) -> str:
    header = (
        "| optimizer | final -ELBO (updates) | final -ELBO (PyMC) | trace rel. diff | mean diff | std diff "
        "| ms/iter (updates) | ms/iter (PyMC) |"
    )
    lines = [header, "|" + "---|" * header.count(" | ") + "---|"]
    for r in results:
        lines.append(
            f"| {r.name} | {r.ours.loss[-1]:.4f} | {r.theirs.loss[-1]:.4f} | {r.trace_difference:.1e} "
            f"| {r.mean_difference:.1e} | {r.std_difference:.1e} "
            f"| {1e3 * r.ours.seconds_per_iteration:.3f} | {1e3 * r.theirs.seconds_per_iteration:.3f} |"
        )
    return "\n".join(lines)


def changing_rates(iterations: int, seed: int) -> str:
    """Fit with a cosine schedule through pm.fit, and on a plateau; describe both."""
    model = regression_model()
    scheduled = fit(model, updates.adam(learning_rate=cosine_schedule(iterations)), iterations, seed)
    plateau = fit_on_plateau(model, iterations, seed)
    cuts = int(np.sum(np.diff(plateau.rates) < 0))
    return "\n".join(
        [
            f"adam, cosine_decay through pm.fit: final -ELBO {scheduled.loss[-1]:.4f} (mean of the last 10 "
            f"{scheduled.loss[-10:].mean():.4f}), fitted mean {np.round(scheduled.mean, 3)}",
            f"adam, reduce_on_plateau: final -ELBO {plateau.loss[-1]:.4f} (mean of the last 10 "
            f"{plateau.loss[-10:].mean():.4f}), fitted mean {np.round(plateau.mean, 3)}, learning rate "
            f"{plateau.rates[0]:g} -> {plateau.rates[-1]:g} in {cuts} cuts",
        ]
    )


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--iterations", type=int, default=3000, help="ADVI iterations per fit")
    parser.add_argument("--seed", type=int, default=20, help="the random seed of every fit")
    parser.add_argument("--quick", action="store_true", help="a small budget (300 iterations), for CI")
    parser.add_argument("--per-parameter", action="store_true", help="build updates' per-parameter graph")
    parser.add_argument("--tolerance", type=float, default=1e-9, help="largest trace difference accepted")
    args = parser.parse_args()
    iterations = 300 if args.quick else args.iterations
    results = compare(iterations=iterations, seed=args.seed, per_parameter=args.per_parameter)
    print(report(results))
    for r in results:
        print(f"{r.name}: fitted mean {np.round(r.ours.mean, 3)}, std {np.round(r.ours.std, 3)} (updates)")
    print(changing_rates(iterations, args.seed))
    apart = [r.name for r in results if r.trace_difference > args.tolerance]
    if apart:
        raise SystemExit(f"the ELBO traces differ by more than {args.tolerance:g} for {', '.join(apart)}")


if __name__ == "__main__":
    main()
