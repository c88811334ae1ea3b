"""Bifurcation sweep: fixed points, cycles, the attractor and lambda_max along one model parameter.

For each value the parameter is set (one entry, e.g. a bias ``h1[0]``) or the whole tensor is
multiplied by it (e.g. ``W1`` scaled by 0.8 .. 1.2), on a copy of the model; then

* the fixed points and cycles of the requested periods are searched
  (:func:`dsrecon.analysis.search.find_cycles`, started from the regions of the attractor's orbit
  and from random ones),
* an orbit from ``z0`` is run past a transient and ``n_orbit`` of its points kept (the classic
  orbit diagram), and
* its largest Lyapunov exponent is estimated (:func:`dsrecon.lyapunov.lyapunov_spectrum`).

Eisenmann et al. (NeurIPS 2023) trace how such bifurcations in the trained parameters go with jumps
in the loss; this sweep makes the same picture for any one parameter of a fitted model.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch

from dsrecon.analysis.cycle import Cycle, DataUnits, observe
from dsrecon.analysis.search import find_cycles
from dsrecon.analysis.threads import torch_threads
from dsrecon.lyapunov import lyapunov_spectrum

__all__ = ["BifurcationSweep", "bifurcation_sweep"]


@dataclass(frozen=True)
class BifurcationSweep:
    """Result of :func:`bifurcation_sweep`.

    Attributes
    ----------
    parameter : str
        The parameter's name, with its entry when one was set (``h1[0]``) or ``x W1`` when scaled.
    values : np.ndarray, shape ``(V,)``
    cycles : list of list of Cycle
        The fixed points and cycles found at each value.
    lambda_max : np.ndarray, shape ``(V,)``
        Largest Lyapunov exponent per step of the orbit from ``z0`` (NaN where it diverged).
    orbit : np.ndarray, shape ``(V, n_orbit, N)``
        Observed points of that orbit after the transient, in data units (NaN where it diverged).
    dt : float or None
        Sampling interval, for exponents per time unit in plots.
    """

    parameter: str
    values: np.ndarray
    cycles: list
    lambda_max: np.ndarray
    orbit: np.ndarray
    dt: float | None = None

    def to_dict(self) -> dict:
        return {"parameter": self.parameter, "values": self.values.tolist(),
                "lambda_max_per_step": [None if not np.isfinite(v) else float(v) for v in self.lambda_max],
                "cycles": [[c.to_dict() for c in cs] for cs in self.cycles]}


def bifurcation_sweep(model, parameter: str, values, *, index=None, z0=None, periods=(1, 2), n_outer: int = 100,
                      n_inner: int = 30, transient: int = 2000, n_orbit: int = 200, lyapunov_steps: int = 2000,
                      data_mean=None, data_std=None, dt: float | None = None, seed: int = 0,
                      threads: int | None = 1) -> BifurcationSweep:
    """Trace cycles, the attractor and lambda_max while one parameter varies.

    Parameters
    ----------
    model : Model
        A piecewise-linear model (for the cycle search; shPLRNN: ``A``, ``W1``, ``W2``, ``h1``, ``h2``).
    parameter : str
        Name of a parameter of the model (``model.get_parameter``).
    values : array, shape ``(V,)``
        With ``index``: the values that entry takes. Without: factors the whole parameter is
        multiplied by (1 is the fitted model).
    index : int or tuple of int, optional
        The entry to set, e.g. ``0`` for ``h1[0]`` or ``(2, 5)`` for ``W1[2, 5]``.
    z0 : array, shape ``(M,)``, optional
        Start of the orbit (default: the origin).
    periods : tuple of int
        Cycle periods searched at each value.
    n_outer, n_inner : int
        Search settings (:func:`dsrecon.analysis.search.find_cycles`).
    transient, n_orbit, lyapunov_steps : int
        Orbit settings.
    data_mean, data_std : array, shape ``(N,)``, optional
        The data's standardization, for data units.
    dt : float, optional
        Sampling interval (kept for plots per time unit).
    """
    try:
        original = model.get_parameter(parameter)
    except AttributeError as err:
        names = ", ".join(n for n, _ in model.named_parameters())
        raise ValueError(f"the model has no parameter {parameter!r}; valid: {names}") from err
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if values.size == 0 or not np.all(np.isfinite(values)):
        raise ValueError("values must be a non-empty array of finite numbers")
    if index is not None:
        index = tuple(np.atleast_1d(index).tolist())
        if len(index) != original.ndim or any(not 0 <= i < n for i, n in zip(index, original.shape)):
            raise ValueError(f"index {index} is not an entry of {parameter} with shape {tuple(original.shape)}")
    units = DataUnits(data_mean, data_std)
    M = model.state_dim
    start = torch.zeros(M, dtype=torch.float64) if z0 is None else torch.as_tensor(z0, dtype=torch.float64).reshape(-1)
    if start.numel() != M:
        raise ValueError(f"z0 must have M = {M} entries, got {start.numel()}")
    all_cycles, lams, orbits = [], [], []
    with torch_threads(threads), torch.no_grad():
        for value in values:
            varied = copy.deepcopy(model).double().eval()
            p = varied.get_parameter(parameter)
            if index is None:
                p.mul_(float(value))
            else:
                p[index] = float(value)
            z = start.unsqueeze(0).to(p.device)
            for _ in range(transient):
                z = varied.step(z)
            states = [z]
            for _ in range(n_orbit - 1):
                states.append(varied.step(states[-1]))
            states = torch.cat(states)  # (n_orbit, M)
            finite = bool(torch.isfinite(states).all()) and float(states.abs().max()) < 1e6
            obs = observe(varied, states) if finite else np.full((n_orbit, model.obs_dim), np.nan)
            orbits.append(units.to_data(obs))
            lam = np.nan
            if finite:
                try:
                    lam = float(lyapunov_spectrum(varied, z0=states[-1:], n_steps=lyapunov_steps,
                                                  transient=0).exponents[0])
                except RuntimeError:  # the orbit diverged during the estimate
                    lam = np.nan
            lams.append(lam)
            found: list[Cycle] = []
            for k in periods:
                found += find_cycles(varied, k, n_outer=n_outer, n_inner=n_inner, seed=seed,
                                     starts=states if finite else None, data_mean=units.mean, data_std=units.std,
                                     threads=None)
            all_cycles.append(found)
    name = f"{parameter}[{', '.join(map(str, index))}]" if index is not None else f"x {parameter}"
    return BifurcationSweep(parameter=name, values=values, cycles=all_cycles, lambda_max=np.asarray(lams),
                            orbit=np.stack(orbits), dt=dt)
