"""The vector fields of the reconstruction zoo (``benchmarks/zoo.py``), their simulation and their
true largest Lyapunov exponents. Benchmark code, not package API.

Every ODE right-hand side is a numpy function ``f(x)`` on states ``(..., D)`` (autonomous, so no
``t``), vectorized over the leading axes: one call evaluates a trajectory's state and its
finite-difference tangent probes together. Trajectories are integrated with scipy's ``DOP853``
(rtol = atol = 1e-9), sampled every ``dt`` after a transient (dsrecon's ``integrate`` takes only its
registered systems, not an arbitrary vector field). The delay system (Mackey-Glass) is integrated by
the method of steps with an exponential trapezoid rule (see :func:`mackey_glass`).

True exponents: Benettin's method with QR re-orthonormalization (Benettin et al. 1980; Eckmann &
Ruelle 1985) on the variational equation ``Q' = J(x) Q``, integrated with fixed-step RK4 beside the
state; ``J(x) q`` is a central finite difference ``(f(x + e q) - f(x - e q)) / 2e`` (error
O(e^2), e = 1e-6), so no hand-written Jacobians are needed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

START_SPREAD = 0.01  # perturbation of x0 that makes the train, test and floor trajectories independent
FD_STEP = 1e-6  # finite-difference step of the tangent products J q (relative to |q| = 1)


# --------------------------------------------------------------------------- vector fields
def lorenz63(x, s=10.0, r=28.0, b=8.0 / 3.0):
    """Lorenz (1963). lambda_max 0.906 per time unit at the classical parameters."""
    x1, x2, x3 = x[..., 0], x[..., 1], x[..., 2]
    return np.stack([s * (x2 - x1), x1 * (r - x3) - x2, x1 * x2 - b * x3], axis=-1)


def rossler(x, a=0.2, b=0.2, c=5.7):
    """Rössler (1976) spiral chaos; lambda_max about 0.07 per time unit."""
    x1, x2, x3 = x[..., 0], x[..., 1], x[..., 2]
    return np.stack([-x2 - x3, x1 + a * x2, b + x3 * (x1 - c)], axis=-1)


def rossler_hyperchaos(x, a=0.25, b=3.0, c=0.5, d=0.05):
    """Rössler (1979) hyperchaos, 4-d: ``x' = -y - z, y' = x + a y + w, z' = b + x z, w' = -c z + d w``;
    two positive exponents (about 0.11 and 0.02 per time unit)."""
    x1, x2, x3, x4 = x[..., 0], x[..., 1], x[..., 2], x[..., 3]
    return np.stack([-x2 - x3, x1 + a * x2 + x4, b + x1 * x3, -c * x3 + d * x4], axis=-1)


def lorenz96(x, F=8.0):
    """Lorenz (1996) ring ``x_i' = (x_{i+1} - x_{i-2}) x_{i-1} - x_i + F``; N = x.shape[-1]."""
    return (np.roll(x, -1, axis=-1) - np.roll(x, 2, axis=-1)) * np.roll(x, 1, axis=-1) - x + F


def lorenz84(x, a=0.25, b=4.0, F=8.0, G=1.0):
    """Lorenz (1984) low-order general circulation: a westerly jet x and a travelling wave (y, z)."""
    x1, x2, x3 = x[..., 0], x[..., 1], x[..., 2]
    return np.stack([-x2 ** 2 - x3 ** 2 - a * x1 + a * F, x1 * x2 - b * x1 * x3 - x2 + G,
                     b * x1 * x2 + x1 * x3 - x3], axis=-1)


def chua(x, alpha=15.6, beta=28.0, m0=-1.143, m1=-0.714):
    """Chua's circuit, dimensionless, double scroll: slow spirals on each scroll, irregular jumps
    between them. ``h(x) = m1 x + (m0 - m1)(|x + 1| - |x - 1|) / 2``."""
    x1, x2, x3 = x[..., 0], x[..., 1], x[..., 2]
    h = m1 * x1 + 0.5 * (m0 - m1) * (np.abs(x1 + 1.0) - np.abs(x1 - 1.0))
    return np.stack([alpha * (x2 - x1 - h), x1 - x2 + x3, -beta * x2], axis=-1)


def thomas(x, b=0.208186):
    """Thomas (1999) cyclically symmetric attractor ``x' = sin y - b x`` (cyclic); at b = 0.208186,
    Thomas' value near the onset of chaos, slow and weakly chaotic (lambda_max about 0.004 per time
    unit, :func:`benettin_exponents` over 5,000 time units)."""
    x1, x2, x3 = x[..., 0], x[..., 1], x[..., 2]
    return np.stack([np.sin(x2) - b * x1, np.sin(x3) - b * x2, np.sin(x1) - b * x3], axis=-1)


def halvorsen(x, a=1.4):
    """Halvorsen's cyclically symmetric attractor ``x' = -a x - 4 y - 4 z - y^2`` (cyclic)."""
    x1, x2, x3 = x[..., 0], x[..., 1], x[..., 2]
    return np.stack([-a * x1 - 4 * x2 - 4 * x3 - x2 ** 2, -a * x2 - 4 * x3 - 4 * x1 - x3 ** 2,
                     -a * x3 - 4 * x1 - 4 * x2 - x1 ** 2], axis=-1)


def hindmarsh_rose(x, a=1.0, b=3.0, c=1.0, d=5.0, r=0.006, s=4.0, x_rest=-1.6, current=3.25):
    """Hindmarsh & Rose (1984) bursting neuron: fast spiking (x, y) modulated by a slow adaptation
    current z (time scale 1/r), chaotic bursting at ``I = 3.25, r = 0.006``."""
    x1, x2, x3 = x[..., 0], x[..., 1], x[..., 2]
    return np.stack([x2 - a * x1 ** 3 + b * x1 ** 2 - x3 + current, c - d * x1 ** 2 - x2,
                     r * (s * (x1 - x_rest) - x3)], axis=-1)


# --------------------------------------------------------------------------- integration
def integrate_ode(rhs: Callable, x0, n_steps: int, dt: float, transient: float) -> np.ndarray:
    """``n_steps`` samples ``(n_steps, D)`` every ``dt`` after ``transient`` time units (DOP853, rtol =
    atol = 1e-9; the first sample is the state at ``t = transient``)."""
    from scipy.integrate import solve_ivp  # imported here: scipy's import alone takes seconds

    x0 = np.asarray(x0, dtype=np.float64)
    fun = lambda t, y: rhs(y)  # noqa: E731
    if transient > 0:
        x0 = solve_ivp(fun, (0.0, transient), x0, method="DOP853", rtol=1e-9, atol=1e-9).y[:, -1]
    t_eval = np.arange(n_steps) * dt
    sol = solve_ivp(fun, (0.0, t_eval[-1]), x0, method="DOP853", rtol=1e-9, atol=1e-9, t_eval=t_eval)
    if not sol.success or sol.y.shape[1] != n_steps:
        raise RuntimeError(f"integration failed: {sol.message}")
    return sol.y.T.copy()  # (n_steps, D)


def _tangent(rhs: Callable, x: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``J(x) q`` for tangent columns ``q (D, k)`` by central differences: returns ``(D, k)``."""
    probes = np.concatenate([x[None, :] + FD_STEP * q.T, x[None, :] - FD_STEP * q.T], axis=0)  # (2k, D)
    f = rhs(probes)
    k = q.shape[1]
    return ((f[:k] - f[k:]) / (2 * FD_STEP)).T  # (D, k)


def benettin_exponents(rhs: Callable, x0, n_time: float, h: float, k: int = 2, transient: float = 50.0,
                       qr_every: int = 10) -> np.ndarray:
    """The ``k`` largest Lyapunov exponents (per time unit) of ``x' = rhs(x)`` from ``x0``.

    State and tangent columns ``Q (D, k)`` advance together by RK4 with step ``h``; ``Q`` is
    re-orthonormalized by QR every ``qr_every`` steps and the logs of ``|diag R|`` summed, over
    ``n_time`` time units after a ``transient`` (state only, then tangents settle for 10 % of
    ``n_time`` before averaging starts).
    """
    x = np.asarray(x0, dtype=np.float64).copy()
    for _ in range(int(round(transient / h))):
        k1 = rhs(x); k2 = rhs(x + 0.5 * h * k1); k3 = rhs(x + 0.5 * h * k2); k4 = rhs(x + h * k3)  # noqa: E702
        x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    q, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((x.size, k)))
    n_settle, n_avg = int(round(0.1 * n_time / h)), int(round(n_time / h))
    logs = np.zeros(k)

    def deriv(state, tang):
        return rhs(state), _tangent(rhs, state, tang)

    for i in range(n_settle + n_avg):
        a1, b1 = deriv(x, q)
        a2, b2 = deriv(x + 0.5 * h * a1, q + 0.5 * h * b1)
        a3, b3 = deriv(x + 0.5 * h * a2, q + 0.5 * h * b2)
        a4, b4 = deriv(x + h * a3, q + h * b3)
        x = x + h / 6 * (a1 + 2 * a2 + 2 * a3 + a4)
        q = q + h / 6 * (b1 + 2 * b2 + 2 * b3 + b4)
        if (i + 1) % qr_every == 0:
            q, r = np.linalg.qr(q)
            if i >= n_settle:
                logs += np.log(np.abs(np.diag(r)))
    if not np.all(np.isfinite(x)):
        raise RuntimeError("the orbit diverged while computing the Lyapunov exponents")
    return logs / ((n_avg // qr_every) * qr_every * h)


# --------------------------------------------------------------------------- Mackey-Glass
MG_A, MG_B, MG_POWER, MG_STEP = 0.2, 0.1, 10, 0.01


def _mg_feedback(x):
    return MG_A * x / (1.0 + x ** MG_POWER)


def _mg_feedback_slope(x):
    xn = x ** MG_POWER
    return MG_A * (1.0 + xn - MG_POWER * xn) / (1.0 + xn) ** 2


def _mg_interval(x_last: float, u: np.ndarray) -> np.ndarray:
    """Solve ``x' = -b x + u(t)`` over one delay interval on the grid of step ``MG_STEP``, with ``u``
    known there (``u[0]`` at the interval's start, the last point ``x_last``): exponential trapezoid
    ``x_{n+1} = e^{-bh} x_n + h/2 (e^{-bh} u_n + u_{n+1})``, second order, one linear recurrence
    (``lfilter``). Returns the ``len(u) - 1`` new grid values."""
    from scipy.signal import lfilter  # imported here: scipy.signal's import alone takes seconds

    decay = math.exp(-MG_B * MG_STEP)
    drive = 0.5 * MG_STEP * (decay * u[:-1] + u[1:])  # (m,)
    out, _ = lfilter([1.0], [1.0, -decay], drive, zi=[decay * x_last])
    return out


def mackey_glass(n_samples: int, dt: float = 1.0, tau: float = 17.0, transient: float = 1000.0, seed: int = 0,
                 lyapunov_time: float = 0.0) -> tuple[np.ndarray, float | None]:
    """Mackey & Glass (1977) ``x' = a x(t - tau) / (1 + x(t - tau)^10) - b x`` (a = 0.2, b = 0.1),
    sampled every ``dt`` after ``transient``; returns ``(x (n_samples,), lambda_max or None)``.

    Method of steps on a grid of ``h = MG_STEP`` with ``tau / h`` an integer: over each delay
    interval the feedback term is known from the previous interval, so the interval is one linear
    recurrence (:func:`_mg_interval`). The history is a constant ``0.5 + 0.1 u`` (``u`` uniform from
    ``seed``'s generator) on ``[-tau, 0]``. With ``lyapunov_time > 0`` the linearized equation
    ``dx' = -b dx + g'(x(t - tau)) dx(t - tau)`` is integrated on the same grid over that many time
    units after the samples, its history function renormalized every interval (the growth of its
    L2 norm over a delay interval, averaged, is lambda_max per time unit; Farmer 1982).
    """
    m = int(round(tau / MG_STEP))
    if abs(m * MG_STEP - tau) > 1e-9 or abs(round(dt / MG_STEP) * MG_STEP - dt) > 1e-9:
        raise ValueError(f"tau and dt must be multiples of the grid step {MG_STEP}")
    every = int(round(dt / MG_STEP))
    rng = np.random.default_rng(seed)
    hist = np.full(m + 1, 0.5 + 0.1 * rng.uniform())  # x on [t - tau, t], m + 1 grid points
    total = transient + n_samples * dt + lyapunov_time
    n_int = int(math.ceil(total / tau))
    xs = [hist[-1:]]
    dhist = rng.standard_normal(m + 1)
    dhist /= np.linalg.norm(dhist)
    log_growth, lyap_intervals = 0.0, 0
    lyap_start = int(math.ceil((transient + n_samples * dt) / tau))
    for j in range(n_int):
        new = _mg_interval(hist[-1], _mg_feedback(hist))  # (m,)
        if lyapunov_time > 0 and j >= lyap_start:
            dnew = _mg_interval(dhist[-1], _mg_feedback_slope(hist) * dhist)
            dhist = np.concatenate([dhist[-1:], dnew])
            norm = np.linalg.norm(dhist)
            if j >= lyap_start + 20:  # tangent settled onto the unstable direction
                log_growth += math.log(norm)
                lyap_intervals += 1
            dhist /= norm
        hist = np.concatenate([hist[-1:], new])
        xs.append(new)
    grid = np.concatenate(xs)  # x at t = 0, h, 2h, ...
    first = int(round(transient / MG_STEP))
    samples = grid[first: first + n_samples * every: every]
    if samples.size != n_samples or not np.all(np.isfinite(samples)):
        raise RuntimeError("Mackey-Glass integration produced too few or non-finite samples")
    lam = log_growth / (lyap_intervals * tau) if lyap_intervals else None
    return samples, lam


# --------------------------------------------------------------------------- the zoo's systems
@dataclass(frozen=True)
class ZooSystem:
    """One simulated data set: equations, sampling, lengths and how the true exponent is computed.

    ``x0`` is a start near the attractor; trajectory ``k`` (0 train, 1 test, 2 floor) starts at
    ``START_SPREAD``-scale perturbation from its own generator and runs a ``transient`` first.
    ``lyap`` holds ``(time units, RK4 step)`` of the Benettin run.
    """

    name: str
    rhs: Callable | None  # None: Mackey-Glass (delay system)
    x0: tuple
    dt: float
    n_train: int
    n_test: int
    noise: float
    what: str
    transient: float = 100.0
    lyap: tuple = (1000.0, 0.01)

    @property
    def dim(self) -> int:
        return 1 if self.rhs is None else len(self.x0)


def _l96_start(n: int) -> tuple:
    return tuple(8.0 + 0.01 * np.random.default_rng(1).standard_normal(n))


ZOO_SYSTEMS: dict[str, ZooSystem] = {s.name: s for s in [
    ZooSystem("lorenz63", lorenz63, (1.0, 1.0, 20.0), 0.01, 50_000, 20_000, 0.0,
              "reference, the package's main case", lyap=(500.0, 0.005)),
    ZooSystem("rossler_noise5", rossler, (1.0, 1.0, 0.0), 0.05, 100_000, 20_000, 0.05,
              "slow spiral, rare z excursions; issue 16's failing case", lyap=(2000.0, 0.02)),
    ZooSystem("lorenz63_coarse", lorenz63, (1.0, 1.0, 20.0), 0.1, 20_000, 10_000, 0.01,
              "coarse sampling (dt 0.1, ~1/11 of a Lyapunov time)", lyap=(500.0, 0.005)),
    ZooSystem("mackey_glass", None, (), 1.0, 20_000, 10_000, 0.0,
              "delay system, tau 17, observed as a scalar (fit must embed)", transient=1000.0, lyap=(20_000.0, 0.0)),
    ZooSystem("halvorsen_noise10", halvorsen, (-5.0, 0.0, 0.0), 0.02, 50_000, 20_000, 0.10,
              "cyclic symmetric attractor, 10 % noise", lyap=(500.0, 0.005)),
    ZooSystem("chua", chua, (0.7, 0.0, 0.0), 0.05, 50_000, 20_000, 0.0,
              "double scroll: spirals with irregular jumps between scrolls", lyap=(1000.0, 0.01)),
    ZooSystem("rossler_hyperchaos", rossler_hyperchaos, (-10.0, -6.0, 0.0, 10.0), 0.1, 50_000, 20_000, 0.01,
              "hyperchaos, 4-d, two positive exponents", transient=200.0, lyap=(2000.0, 0.02)),
    ZooSystem("hindmarsh_rose", hindmarsh_rose, (-1.0, -5.0, 3.0), 0.05, 100_000, 40_000, 0.0,
              "fast spikes and slow bursts (r = 0.006): several time scales", transient=1000.0,
              lyap=(2000.0, 0.02)),
    ZooSystem("thomas_noise5", thomas, (0.1, 0.0, 0.0), 0.1, 50_000, 20_000, 0.05,
              "slow, weakly chaotic wandering near the onset of chaos", transient=500.0, lyap=(5000.0, 0.05)),
    ZooSystem("lorenz84", lorenz84, (1.0, 1.0, 1.0), 0.05, 50_000, 20_000, 0.0,
              "westerly jet and travelling waves", lyap=(1000.0, 0.02)),
    ZooSystem("lorenz63_fine", lorenz63, (1.0, 1.0, 20.0), 0.002, 100_000, 50_000, 0.0,
              "fine sampling (dt 0.002, 550 steps per Lyapunov time)", lyap=(500.0, 0.005)),
    ZooSystem("lorenz96_n20", lorenz96, _l96_start(20), 0.05, 50_000, 20_000, 0.0,
              "20-d, spatially extended (N = 20, F = 8)", lyap=(300.0, 0.005)),
]}


def simulate_zoo(system: ZooSystem, which: int, n_steps: int, seed: int = 0) -> np.ndarray:
    """Trajectory ``which`` (0 train, 1 test, 2 noise-floor reference) of ``system``: ``(n_steps, D)``
    in the system's own units, with observation noise of ``system.noise`` times each clean channel's
    std (independent draws per trajectory). Independent starts: ``x0`` plus a ``START_SPREAD``-scale random
    perturbation from ``default_rng((seed, which))`` (or another Mackey-Glass history), then the
    transient."""
    rng = np.random.default_rng((seed, which))
    if system.rhs is None:
        x, _ = mackey_glass(n_steps, system.dt, transient=system.transient, seed=seed * 10 + which)
        x = x[:, None]
    else:
        start = np.asarray(system.x0) + START_SPREAD * rng.standard_normal(system.dim)
        x = integrate_ode(system.rhs, start, n_steps, system.dt, system.transient)
    if system.noise > 0:
        x = x + system.noise * x.std(axis=0) * rng.standard_normal(x.shape)
    return x


def true_exponents(system: ZooSystem, k: int = 2) -> np.ndarray:
    """The ``k`` largest Lyapunov exponents per time unit from the equations (Mackey-Glass: only the
    largest, from its linearized delay equation)."""
    if system.rhs is None:
        _, lam = mackey_glass(1, system.dt, transient=system.transient, lyapunov_time=system.lyap[0])
        return np.array([lam])
    n_time, h = system.lyap
    return benettin_exponents(system.rhs, system.x0, n_time, h, k=min(k, system.dim), transient=system.transient)


def true_exponents_key(system: ZooSystem) -> str:
    """The key of :func:`cached_true_exponents`: everything that determines the exponents (equations,
    start, transient, Benettin settings), not the noise or the series lengths."""
    return repr((getattr(system.rhs, "__name__", "mackey_glass"), system.x0, system.transient, system.lyap, []))


def cached_true_exponents(system: ZooSystem, cache_file) -> list:
    """:func:`true_exponents`, stored in the JSON file ``cache_file`` under
    :func:`true_exponents_key`, so a rerun does not repeat them."""
    import json
    from pathlib import Path

    cache_file = Path(cache_file)
    key = true_exponents_key(system)
    cache = json.loads(cache_file.read_text()) if cache_file.exists() else {}
    if key not in cache:
        cache[key] = [float(v) for v in true_exponents(system)]
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        fresh = json.loads(cache_file.read_text()) if cache_file.exists() else {}  # another process may have added
        cache_file.write_text(json.dumps({**fresh, key: cache[key]}, indent=1) + "\n")
    return cache[key]
