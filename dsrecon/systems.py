"""Benchmark dynamical systems and ``simulate``, the verb that produces ground-truth data.

The equations live in code (torch modules ``f(t, y)`` on batched states ``(B, D)``), their
metadata (parameters, sampling interval, initial-condition box) in the registry ``SYSTEMS``.
``simulate`` follows the protocol of docs/method.md section 1: a random initial condition from a seeded local
generator, a discarded transient of at least 50 time units, a tight-tolerance adaptive solver
(torchdiffeq ``dopri5``, rtol = atol = 1e-9, float64), sampling every ``dt``, z-scoring and
optional observation noise. Results are cached as HDF5 (``dsrecon._cache``).

Cost: the adaptive solver's Python overhead per step dominates on these small systems, so a
batch of K initial conditions costs little more than one, and the higher-order ``dopri8`` takes
fewer, larger steps than ``dopri5`` at rtol = atol = 1e-9 (figures: docs/performance.md). A cached
result loads in milliseconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from dsrecon._version import __version__
from dsrecon.trajectory import Trajectory

CHUNK_STEPS = 2_000  # output steps per odeint call: bounded memory, a responsive progress bar
ADAPTIVE = ("dopri8", "dopri5", "bosh3", "fehlberg2", "adaptive_heun")
FIXED_GRID = ("euler", "midpoint", "heun2", "heun3", "rk4")


# --------------------------------------------------------------------------- equations
class Lorenz63(nn.Module):
    """Lorenz (1963): ``x' = s(y - x), y' = x(r - z) - y, z' = xy - bz``.

    Fixed points: the origin and ``(+-sqrt(b(r-1)), +-sqrt(b(r-1)), r-1)``. Divergence
    ``-(s + 1 + b)``, so the Lyapunov exponents sum to -13.667 for the classical parameters.
    """

    def __init__(self, s: float = 10.0, r: float = 28.0, b: float = 8.0 / 3.0):
        super().__init__()
        self.s, self.r, self.b = s, r, b

    def forward(self, t, y: torch.Tensor) -> torch.Tensor:  # y: (B, 3)
        x1, x2, x3 = y[..., 0], y[..., 1], y[..., 2]
        return torch.stack(
            [self.s * (x2 - x1), x1 * (self.r - x3) - x2, x1 * x2 - self.b * x3], dim=-1
        )  # (B, 3)


class Rossler(nn.Module):
    """Rössler (1976): ``x' = -y - z, y' = x + a y, z' = b + z (x - c)``."""

    def __init__(self, a: float = 0.2, b: float = 0.2, c: float = 5.7):
        super().__init__()
        self.a, self.b, self.c = a, b, c

    def forward(self, t, y: torch.Tensor) -> torch.Tensor:  # y: (B, 3)
        x1, x2, x3 = y[..., 0], y[..., 1], y[..., 2]
        return torch.stack([-x2 - x3, x1 + self.a * x2, self.b + x3 * (x1 - self.c)], dim=-1)


class Lorenz96(nn.Module):
    """Lorenz (1996): ``x_i' = (x_{i+1} - x_{i-2}) x_{i-1} - x_i + F``, indices cyclic.

    The divergence is ``-N``, so the N Lyapunov exponents sum to ``-N``.
    """

    def __init__(self, N: int = 20, F: float = 8.0):
        super().__init__()
        if int(N) != N or N < 4:
            raise ValueError(f"lorenz96 needs an integer N >= 4, got N = {N}")
        self.N, self.F = int(N), F

    def forward(self, t, y: torch.Tensor) -> torch.Tensor:  # y: (B, N)
        ahead = torch.roll(y, -1, dims=-1)  # x_{i+1}
        back2 = torch.roll(y, 2, dims=-1)  # x_{i-2}
        back1 = torch.roll(y, 1, dims=-1)  # x_{i-1}
        return (ahead - back2) * back1 - y + self.F  # (B, N)


def _box(low, high):
    """Initial conditions uniform in the box ``[low, high]`` (per coordinate)."""

    def sample(rng: np.random.Generator, n: int, params: dict) -> np.ndarray:
        return rng.uniform(low, high, size=(n, len(low)))

    return sample


def _lorenz96_ic(rng: np.random.Generator, n: int, params: dict) -> np.ndarray:
    # near the unstable equilibrium x_i = F; the perturbation grows onto the attractor
    return params["F"] + 0.01 * rng.standard_normal((n, int(params["N"])))


@dataclass(frozen=True)
class System:
    """A registered benchmark system: equations, defaults and how to start it."""

    name: str
    rhs: Callable[..., nn.Module]  # rhs(**params) -> module f(t, y)
    params: dict
    dt: float
    initial_conditions: Callable  # (rng, n, params) -> (n, D)
    description: str = ""

    def dim(self, params: dict) -> int:
        return int(params["N"]) if "N" in params else 3


SYSTEMS: dict[str, System] = {
    "lorenz63": System(
        "lorenz63", Lorenz63, {"s": 10.0, "r": 28.0, "b": 8.0 / 3.0}, 0.01,
        _box([-10.0, -10.0, 10.0], [10.0, 10.0, 40.0]),
        "Lorenz (1963) convection model, classical chaotic parameters",
    ),
    "rossler": System(
        "rossler", Rossler, {"a": 0.2, "b": 0.2, "c": 5.7}, 0.05,
        _box([-5.0, -5.0, 0.0], [5.0, 5.0, 1.0]),
        "Rössler (1976) spiral chaos",
    ),
    "lorenz96": System(
        "lorenz96", Lorenz96, {"N": 20, "F": 8.0}, 0.01, _lorenz96_ic,
        "Lorenz (1996) atmospheric toy model, N sites on a ring, forcing F",
    ),
}


def get_system(name: str) -> System:
    """The registered system ``name``; an unknown name lists the valid ones."""
    key = str(name).lower()
    if key not in SYSTEMS:
        raise ValueError(f"unknown system {name!r}; valid names: {', '.join(SYSTEMS)}")
    return SYSTEMS[key]


def resolve_params(system: System, params: dict | None) -> dict:
    """The system's default parameters updated with ``params`` (unknown keys are an error)."""
    params = dict(params or {})
    unknown = sorted(set(params) - set(system.params))
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {', '.join(unknown)} for {system.name}; valid: "
            f"{', '.join(f'{k} (default {v:g})' for k, v in system.params.items())}"
        )
    out = {**system.params, **params}
    if "N" in out and (float(out["N"]) != int(out["N"]) or int(out["N"]) < 4):
        raise ValueError(f"{system.name} needs an integer N >= 4, got N = {out['N']}")
    return {k: (int(v) if k == "N" else float(v)) for k, v in out.items()}


def initial_conditions(name: str, n: int, seed: int = 0, params: dict | None = None) -> np.ndarray:
    """``n`` random initial conditions ``(n, D)`` from ``np.random.default_rng(seed)``.

    Row k does not depend on ``n``, so trajectory k of a batch starts where the k-th of a longer
    batch with the same seed starts (and row 0 is ``simulate``'s start for that seed).
    """
    system = get_system(name)
    return system.initial_conditions(np.random.default_rng(seed), n, resolve_params(system, params))


# --------------------------------------------------------------------------- integration
def _batch_rms_norm(ratio: torch.Tensor) -> torch.Tensor:
    """Error norm for batched states ``(B, D)``: the worst trajectory's RMS error ratio.

    torchdiffeq's default RMS over the whole tensor would let one trajectory's error exceed the
    tolerance when the others are smooth; taking the maximum over the batch holds each trajectory
    to the tolerance it would get alone (identical to the default for B = 1).
    """
    return ratio.pow(2).mean(dim=-1).sqrt().max()


def integrate(
    name: str,
    y0,
    n_steps: int,
    *,
    dt: float | None = None,
    transient: float = 0.0,
    params: dict | None = None,
    device="cpu",
    method: str = "dopri5",
    rtol: float = 1e-9,
    atol: float = 1e-9,
    progress: bool = False,
) -> np.ndarray:
    """Integrate a batch of initial conditions in one call and sample every ``dt``.

    Parameters
    ----------
    name : str
        Registered system.
    y0 : array or tensor, shape ``(B, D)``
        Initial states.
    n_steps : int
        Samples returned per trajectory; the first is the state after ``transient``.
    dt, transient : float
        Sampling interval (default: the system's) and discarded time, in time units.
    params : dict, optional
        Parameter overrides.
    device, method, rtol, atol
        Passed to ``torchdiffeq.odeint`` (float64 throughout).
    progress : bool
        Show a tqdm bar over the chunks.

    Returns
    -------
    np.ndarray, shape ``(B, n_steps, D)``, float64, raw system coordinates.
    """
    from torchdiffeq import odeint
    from tqdm.auto import tqdm

    system = get_system(name)
    params = resolve_params(system, params)
    dt = system.dt if dt is None else float(dt)
    f = system.rhs(**params).to(device)
    y = torch.as_tensor(np.asarray(y0) if not isinstance(y0, torch.Tensor) else y0)
    y = y.to(device=device, dtype=torch.float64)  # (B, D)
    if y.ndim != 2 or y.shape[1] != system.dim(params):
        raise ValueError(f"y0 must have shape (B, {system.dim(params)}), got {tuple(y.shape)}")
    kwargs = {"method": method}
    if method in FIXED_GRID:
        kwargs["options"] = {"step_size": dt}
    else:
        kwargs.update(rtol=rtol, atol=atol, options={"norm": _batch_rms_norm})
    out = np.empty((y.shape[0], n_steps, y.shape[1]))  # (B, T, D)
    with torch.inference_mode():
        if transient > 0:
            t = torch.tensor([0.0, transient], dtype=torch.float64, device=device)
            y = odeint(f, y, t, **kwargs)[-1]  # (B, D)
        out[:, 0] = y.cpu().numpy()
        bar = tqdm(total=n_steps, desc=f"simulate {system.name}", unit="step", disable=not progress)
        bar.update(1)
        done = 1
        while done < n_steps:
            m = min(CHUNK_STEPS, n_steps - done)
            t = torch.arange(m + 1, dtype=torch.float64, device=device) * dt  # (m + 1,)
            sol = odeint(f, y, t, **kwargs)  # (m + 1, B, D)
            out[:, done:done + m] = sol[1:].transpose(0, 1).cpu().numpy()
            y = sol[-1]
            done += m
            bar.update(m)
        bar.close()
    if not np.isfinite(out).all():
        raise RuntimeError(
            f"{system.name} diverged (non-finite states) with {params}, dt={dt}, method={method}; "
            "check the parameters or use a tighter tolerance"
        )
    return out


# --------------------------------------------------------------------------- simulate
def _check_settings(n_steps, dt, transient, noise, seed, rtol, atol, method, device) -> None:
    if int(n_steps) != n_steps or n_steps < 1:
        raise ValueError(f"n_steps must be a positive integer, got {n_steps!r}")
    if dt is not None and not (math.isfinite(dt) and dt > 0):
        raise ValueError(f"dt must be a positive number of time units, got {dt!r}")
    if not (math.isfinite(transient) and transient >= 0):
        raise ValueError(f"transient must be >= 0 time units (protocol: >= 50), got {transient!r}")
    if not (math.isfinite(noise) and noise >= 0):
        raise ValueError(f"noise is a fraction of each dimension's std and must be >= 0, got {noise!r}")
    if int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if not (rtol > 0 and atol > 0):
        raise ValueError(f"rtol and atol must be > 0, got rtol={rtol}, atol={atol}")
    if method not in ADAPTIVE + FIXED_GRID:
        raise ValueError(f"unknown method {method!r}; valid: {', '.join(ADAPTIVE + FIXED_GRID)}")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device={device!r} was asked for but CUDA is not available; use device='cpu'")


def simulate_batch(
    name: str,
    n_trajectories: int,
    n_steps: int = 100_000,
    *,
    dt: float | None = None,
    seed: int = 0,
    transient: float = 50.0,
    standardize: bool = True,
    noise: float = 0.0,
    params: dict | None = None,
    device="cpu",
    method: str = "dopri5",
    rtol: float = 1e-9,
    atol: float = 1e-9,
    cache: bool = True,
    progress: bool | None = None,
) -> list[Trajectory]:
    """Simulate ``n_trajectories`` independent trajectories in one batched solver call.

    Same parameters as ``simulate``; initial condition k is row k of
    ``initial_conditions(name, n_trajectories, seed)``, so the first trajectory starts where
    ``simulate(name, seed=seed)`` starts. Each trajectory is z-scored on its own statistics.
    (Because the batch shares adaptive step sizes, trajectory k agrees with its solo run only up
    to solver tolerance amplified by chaos: pointwise for a few Lyapunov times, statistically
    after that.)

    Returns
    -------
    list of Trajectory, each ``(n_steps, D)``.
    """
    from dsrecon import _cache

    system = get_system(name)
    _check_settings(n_steps, dt, transient, noise, seed, rtol, atol, method, device)
    if int(n_trajectories) != n_trajectories or n_trajectories < 1:
        raise ValueError(f"n_trajectories must be a positive integer, got {n_trajectories!r}")
    full = resolve_params(system, params)
    settings = {
        "system": system.name, "params": full, "dt": system.dt if dt is None else float(dt),
        "n_steps": int(n_steps), "n_trajectories": int(n_trajectories), "seed": int(seed),
        "transient": float(transient), "standardize": bool(standardize), "noise": float(noise),
        "method": method, "rtol": float(rtol), "atol": float(atol), "chunk_steps": CHUNK_STEPS,
        "version": __version__,
    }
    stored = _cache.read(settings) if cache else None
    if stored is None:
        if progress is None:
            progress = n_steps * n_trajectories >= 20_000
        y0 = initial_conditions(system.name, n_trajectories, seed, full)  # (K, D)
        x = integrate(
            system.name, y0, n_steps, dt=settings["dt"], transient=transient, params=full,
            device=device, method=method, rtol=rtol, atol=atol, progress=progress,
        )  # (K, T, D)
        mean, std = x.mean(axis=1), x.std(axis=1)  # (K, D)
        if standardize:
            x = (x - mean[:, None]) / std[:, None]
        if noise > 0:
            # observation noise, a fraction of each dimension's std, from its own stream
            rng = np.random.default_rng([seed, 1])
            scale = 1.0 if standardize else std[:, None]
            x = x + noise * scale * rng.standard_normal(x.shape)
        stored = {"x": x, "mean": mean, "std": std}
        if cache:
            _cache.write(settings, stored)
    base = {**settings, "source": "simulate"}
    del base["n_trajectories"]
    trajs = []
    for k in range(n_trajectories):
        meta = dict(base, trajectory=k)
        if standardize:
            meta.update(mean=stored["mean"][k].tolist(), std=stored["std"][k].tolist(), standardized=True)
        trajs.append(Trajectory(stored["x"][k], dt=settings["dt"], name=system.name, meta=meta))
    return trajs


def simulate(
    name: str,
    n_steps: int = 100_000,
    *,
    dt: float | None = None,
    seed: int = 0,
    transient: float = 50.0,
    standardize: bool = True,
    noise: float = 0.0,
    params: dict | None = None,
    device="cpu",
    method: str = "dopri5",
    rtol: float = 1e-9,
    atol: float = 1e-9,
    cache: bool = True,
    progress: bool | None = None,
) -> Trajectory:
    """Simulate one trajectory of a benchmark system (docs/method.md section 1 protocol).

    Parameters
    ----------
    name : str
        ``"lorenz63"`` (s=10, r=28, b=8/3, dt 0.01), ``"rossler"`` (a=b=0.2, c=5.7, dt 0.05) or
        ``"lorenz96"`` (N=20, F=8, dt 0.01); see ``SYSTEMS``.
    n_steps : int
        T, samples returned (default 100,000, the GTF paper's length).
    dt : float, optional
        Sampling interval in time units (default: the system's).
    seed : int
        Seed of the local generator that draws the initial condition (``initial_conditions``)
        and, independently, the observation noise.
    transient : float
        Time units integrated and discarded first (protocol: at least 50; smaller values are
        accepted for quick checks).
    standardize : bool
        Z-score each dimension (mean/std in ``meta``, see ``Trajectory.unstandardize``).
    noise : float
        Gaussian observation noise with std ``noise`` times each dimension's std, added after
        z-scoring (the GTF paper's training file uses 0.05).
    params : dict, optional
        Parameter overrides, e.g. ``{"N": 10, "F": 8.0}`` for lorenz96.
    device : str or torch.device
        Where the solver runs (``"cuda"`` for a GPU); results come back as NumPy float64.
    method, rtol, atol : str, float, float
        torchdiffeq solver and tolerances (float64). Fixed-grid methods step at ``dt``.
    cache : bool
        Read/write the HDF5 cache (``DSRECON_CACHE_DIR``, default ``~/.cache/dsrecon``); the
        key covers every parameter above except ``device`` and ``progress``.
    progress : bool, optional
        tqdm progress bar (default: on for runs of 20,000 steps or more).

    Returns
    -------
    Trajectory, ``x`` of shape ``(n_steps, D)``, ``dt`` as used, all settings in ``meta``.

    Notes
    -----
    Cost (2-core CPU, rtol = atol = 1e-9): Lorenz-63 with 100,000 steps takes about 83 s with
    dopri5 the first time, milliseconds from the cache. ``method="dopri8"`` takes 32 s but is not as
    tight at the same tolerance (over 2 time units its error against dopri5 at 1e-12 was 3.8e-5,
    dopri5's 7e-7). Use ``simulate_batch`` for several initial conditions in one solver call (on a
    GPU this is nearly free per extra trajectory).
    """
    return simulate_batch(
        name, 1, n_steps, dt=dt, seed=seed, transient=transient, standardize=standardize,
        noise=noise, params=params, device=device, method=method, rtol=rtol, atol=atol,
        cache=cache, progress=progress,
    )[0]


__all__ = [
    "SYSTEMS", "System", "Lorenz63", "Rossler", "Lorenz96", "get_system", "initial_conditions",
    "integrate", "simulate", "simulate_batch",
]
