"""Attractors reached from many initial conditions (multistability) and basin maps on a 2-d slice.

Each initial condition is iterated with the model's own ``step`` (in float64, on a copy of the
model) for ``n_transient`` steps, then classified by its orbit:

* **divergent**: the state became non-finite or left the ball ``|z|_inf <= bound``;
* **fixed point / k-cycle**: ``z_{T+k} = z_T`` (to ``tol``, relative) for some ``k <= max_period``
  (the smallest such k); orbits on one cycle are grouped (equal up to a cyclic shift, to ``tol`` x 100);
* **aperiodic** otherwise: a chaotic or quasi-periodic set. Orbits are grouped by proximity: a
  final state within ``merge_radius`` x (the set's diameter) of a known set's reference sample
  (``n_reference`` points of one orbit on it) belongs to that set; else it starts a new one. Each
  set's largest Lyapunov exponent (:func:`dsrecon.lyapunov.lyapunov_spectrum`, per step) labels it
  ``chaotic`` (above ``chaos_threshold``) or ``quasi-periodic``.

Works for any model of the contract (not only piecewise-linear ones). The grouping of aperiodic
sets is a heuristic: two sets closer than ``merge_radius`` of their size are reported as one.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch

from dsrecon.analysis.cycle import DataUnits, observe, same_cycle
from dsrecon.analysis.threads import torch_threads
from dsrecon.lyapunov import lyapunov_spectrum

__all__ = ["Attractor", "AttractorReport", "BasinMap", "find_attractors", "basin_map"]

DIVERGENT = -1  # label of initial conditions whose orbit diverged


@dataclass(frozen=True)
class Attractor:
    """One attractor reached from the initial conditions.

    Attributes
    ----------
    kind : str
        ``fixed point``, ``cycle``, ``chaotic`` or ``quasi-periodic``.
    period : int or None
        k for a fixed point (1) or cycle; None for an aperiodic set.
    latent : np.ndarray, shape ``(K, M)``
        The cycle points, or a sample of the set (``n_reference`` points of one orbit).
    observed, data : np.ndarray, shape ``(K, N)``
        The same in the model's observation coordinates and in data units.
    lambda_max : float or None
        Largest Lyapunov exponent per step (aperiodic sets only).
    n_initial : int
        Number of initial conditions that reached it.
    """

    kind: str
    period: int | None
    latent: np.ndarray
    observed: np.ndarray
    data: np.ndarray
    lambda_max: float | None
    n_initial: int

    def to_dict(self) -> dict:
        """JSON-ready summary (cycle points in full; a set by its mean and range in data units)."""
        out = {"kind": self.kind, "period": self.period, "n_initial": self.n_initial, "lambda_max": self.lambda_max}
        if self.period is not None:
            out.update(latent=self.latent.tolist(), data=self.data.tolist())
        else:
            out.update(data_mean=self.data.mean(axis=0).tolist(), data_min=self.data.min(axis=0).tolist(),
                       data_max=self.data.max(axis=0).tolist())
        return out


@dataclass(frozen=True)
class AttractorReport:
    """The attractors found from many initial conditions.

    Attributes
    ----------
    attractors : list of Attractor
        Most-visited first.
    labels : np.ndarray, int, shape ``(B,)``
        Index into ``attractors`` of each initial condition's attractor, -1 where it diverged.
    initial : np.ndarray, shape ``(B, M)``
        The initial conditions.
    """

    attractors: list
    labels: np.ndarray
    initial: np.ndarray

    @property
    def n_divergent(self) -> int:
        return int(np.sum(self.labels == DIVERGENT))

    @property
    def multistable(self) -> bool:
        """More than one attractor coexists."""
        return len(self.attractors) > 1

    def summary(self) -> str:
        """One line per attractor, plus the diverged share."""
        n = len(self.labels)
        lines = [f"{len(self.attractors)} attractor(s) from {n} initial conditions"]
        for i, a in enumerate(self.attractors):
            what = a.kind + (f" (period {a.period})" if a.kind == "cycle" else "")
            extra = f", lambda_max {a.lambda_max:.4f} per step" if a.lambda_max is not None else ""
            where = np.array2string(a.data.mean(axis=0), precision=3)
            lines.append(f"  [{i}] {what}: {a.n_initial / n:.1%} of initial conditions, data-units mean {where}{extra}")
        if self.n_divergent:
            lines.append(f"  diverged: {self.n_divergent / n:.1%}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"n_initial": int(len(self.labels)), "n_divergent": self.n_divergent,
                "attractors": [a.to_dict() for a in self.attractors]}


@dataclass(frozen=True)
class BasinMap:
    """Which attractor each point of a 2-d slice of latent space reaches.

    ``z(i, j) = center + a[j] u + b[i] v``; ``labels[i, j]`` indexes ``report.attractors`` (-1: diverged).

    Attributes
    ----------
    a, b : np.ndarray, shapes ``(nx,)`` and ``(ny,)``
        Offsets along the two slice directions.
    center, u, v : np.ndarray, shape ``(M,)``
    labels : np.ndarray, int, shape ``(ny, nx)``
    report : AttractorReport
    axis_names : tuple of str
    """

    a: np.ndarray
    b: np.ndarray
    center: np.ndarray
    u: np.ndarray
    v: np.ndarray
    labels: np.ndarray
    report: AttractorReport
    axis_names: tuple


def find_attractors(model, initial, *, n_transient: int = 5000, max_period: int = 64, tol: float = 1e-7,
                    bound: float = 1e4, n_reference: int = 3000, merge_radius: float = 0.05,
                    chaos_threshold: float = 1e-3, lyapunov_steps: int = 5000, data_mean=None, data_std=None,
                    chunk: int = 8192, threads: int | None = 1) -> AttractorReport:
    """Attractors reached from the initial latent states ``initial`` ``(B, M)`` (see module docstring).

    Parameters
    ----------
    model : Model
    initial : array or tensor, shape ``(B, M)``
        Latent initial conditions (``model.initial_state(x)`` maps observations to them).
    n_transient : int
        Steps before an orbit is classified (slowly attracting points need more).
    max_period : int
        Longest cycle detected as such; longer ones count as aperiodic.
    tol : float
        Relative distance under which ``z_{T+k}`` returns to ``z_T``.
    bound : float
        ``|z|_inf`` above which an orbit counts as divergent.
    n_reference, merge_radius, chaos_threshold, lyapunov_steps
        Grouping and labelling of aperiodic sets (module docstring).
    data_mean, data_std : array, shape ``(N,)``, optional
        The data's standardization, for the attractors' data units.
    chunk : int
        Initial conditions iterated at once.
    threads : int or None
        torch threads (:func:`dsrecon.analysis.threads.torch_threads`).
    """
    for name, value in (("n_transient", n_transient), ("max_period", max_period), ("n_reference", n_reference),
                        ("lyapunov_steps", lyapunov_steps), ("chunk", chunk)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    units = DataUnits(data_mean, data_std)
    model64 = copy.deepcopy(model).double().eval()
    z0 = torch.as_tensor(np.asarray(initial, dtype=np.float64) if not isinstance(initial, torch.Tensor)
                         else initial.detach(), dtype=torch.float64, device=next(model64.parameters()).device)
    if z0.ndim != 2 or z0.shape[1] != model64.state_dim:
        raise ValueError(f"initial must be latent states of shape (B, M) with M = {model64.state_dim}, got "
                         f"{tuple(z0.shape)}; map observations with model.initial_state first")
    with torch_threads(threads), torch.no_grad():
        finals, periods = [], []
        for start in range(0, len(z0), chunk):
            final, period = _settle(model64, z0[start:start + chunk], n_transient, max_period, tol, bound)
            finals.append(final)
            periods.append(period)
        final, period = torch.cat(finals), torch.cat(periods)  # (B, max_period + 1, M), (B,)
        labels = np.full(len(z0), DIVERGENT)
        groups: list[dict] = []  # kind, period, latent, members
        for i in range(len(z0)):
            p = int(period[i])
            if p == DIVERGENT:
                continue
            if p > 0:
                pts = final[i, :p].cpu().numpy()
                match = next((g for g in groups if g["period"] == p and same_cycle(g["latent"], pts, 100 * tol)),
                             None)
                if match is None:
                    match = {"kind": "fixed point" if p == 1 else "cycle", "period": p, "latent": pts, "members": []}
                    groups.append(match)
            else:
                match = _aperiodic_group(model64, final[i, 0], groups, n_reference, merge_radius, bound)
            match["members"].append(i)
        _resolve_slow_cycles(model64, groups, n_transient, max_period, tol, bound, lyapunov_steps,
                             chaos_threshold)
        attractors = []
        for g in sorted(groups, key=lambda g: -len(g["members"])):
            kind, lam = g["kind"], g.get("lambda_max")
            if g["period"] is None:
                kind = "chaotic" if lam > chaos_threshold else "quasi-periodic"
            labels[g["members"]] = len(attractors)
            obs = observe(model64, torch.as_tensor(g["latent"]))
            attractors.append(Attractor(kind=kind, period=g["period"], latent=g["latent"], observed=obs,
                                        data=units.to_data(obs), lambda_max=lam, n_initial=len(g["members"])))
    return AttractorReport(attractors=attractors, labels=labels, initial=z0.cpu().numpy())


def _settle(model, z, n_transient, max_period, tol, bound):
    """Iterate past the transient; return the next ``max_period + 1`` states ``(B, K+1, M)`` and the
    period of each orbit ``(B,)`` (0: none up to ``max_period``, -1: divergent)."""
    alive = torch.ones(len(z), dtype=torch.bool, device=z.device)
    for _ in range(n_transient):
        z = model.step(z)
        bad = ~torch.isfinite(z).all(dim=1) | (z.abs().amax(dim=1) > bound)
        if bool(bad.any()):
            alive &= ~bad
            z = torch.where(bad.unsqueeze(1), torch.zeros_like(z), z)
    states = [z]
    for _ in range(max_period):
        states.append(model.step(states[-1]))
    states = torch.stack(states, dim=1)  # (B, K+1, M)
    alive &= torch.isfinite(states).all(dim=2).all(dim=1) & (states.abs().amax(dim=(1, 2)) <= bound)
    scale = 1 + states[:, 0].abs().amax(dim=1, keepdim=True)  # (B, 1)
    returns = (states[:, 1:] - states[:, :1]).abs().amax(dim=2) <= tol * scale  # (B, K)
    first = torch.where(returns.any(dim=1), returns.float().argmax(dim=1) + 1, torch.zeros_like(alive, dtype=torch.long))
    period = torch.where(alive, first, torch.full_like(first, DIVERGENT))
    return states, period


def _near(points: torch.Tensor, ref: np.ndarray, merge_radius: float) -> bool:
    """Whether any of ``points (S, M)`` is within ``merge_radius`` x (size of ``ref``) of ``ref (R, M)``
    (max-norm)."""
    ref = torch.as_tensor(ref)
    size = max(float((ref.amax(dim=0) - ref.amin(dim=0)).max()), 1e-12)
    for start in range(0, len(points), 512):
        d = (points[start:start + 512, None, :] - ref[None]).abs().amax(dim=2)  # (s, R)
        if float(d.min()) <= merge_radius * size:
            return True
    return False


def _aperiodic_group(model, z, groups, n_reference, merge_radius, bound) -> dict:
    """The aperiodic set that state ``z`` ``(M,)`` lies on: a known one if ``z`` is near its
    reference sample, or if an orbit of ``n_reference`` steps from ``z`` comes near it; else a new
    set with that orbit as its reference sample."""
    sets = [g for g in groups if g["period"] is None]
    for g in sets:
        if _near(z.unsqueeze(0), g["latent"], merge_radius):
            return g
    sample = [z.unsqueeze(0)]
    for _ in range(n_reference - 1):
        sample.append(model.step(sample[-1]))
    sample = torch.cat(sample)  # (n_reference, M)
    for g in sets:
        if _near(sample, g["latent"], merge_radius):
            return g
    group = {"kind": "aperiodic", "period": None, "latent": sample.cpu().numpy(), "members": []}
    groups.append(group)
    return group


def _resolve_slow_cycles(model, groups, n_transient, max_period, tol, bound, lyapunov_steps, chaos_threshold):
    """Give each aperiodic set its largest Lyapunov exponent; a set with a clearly negative one is an
    orbit still converging to a weakly attracting fixed point or cycle (e.g. a focus with
    ``|lambda| = 0.998``): iterate it up to 20 more transients, and when it closes, make the set
    that cycle (merged with the same cycle when already found)."""
    for g in [g for g in groups if g["period"] is None]:
        z = torch.as_tensor(g["latent"][-1:])
        g["lambda_max"] = float(lyapunov_spectrum(model, z0=z, n_steps=lyapunov_steps, transient=0).exponents[0])
        if g["lambda_max"] >= -chaos_threshold:
            continue
        for _ in range(20):
            states, period = _settle(model, z, n_transient, max_period, tol, bound)
            z = states[:, 0]
            if int(period[0]) != 0:
                break
        p = int(period[0])
        if p <= 0:
            continue
        pts = states[0, :p].cpu().numpy()
        same = next((c for c in groups if c["period"] == p and same_cycle(c["latent"], pts, 100 * tol)), None)
        if same is not None:
            same["members"] += g["members"]
            groups[:] = [c for c in groups if c is not g]
        else:
            g.update(kind="fixed point" if p == 1 else "cycle", period=p, latent=pts, lambda_max=None)


def basin_map(model, center, *, axes=(0, 1), extent=1.0, resolution: int = 100, axis_names=None,
              **kwargs) -> BasinMap:
    """Basins of attraction on the 2-d slice ``center + a u + b v`` of latent space.

    Parameters
    ----------
    model : Model
    center : array, shape ``(M,)``
        Slice centre in latent coordinates (e.g. a fixed point, or the mean of an orbit).
    axes : pair of int or pair of arrays ``(M,)``
        The slice directions: latent coordinate indices (for the identity observation model the
        first N latent coordinates are the observed, z-scored data coordinates) or vectors.
    extent : float or (float, float)
        Half-width of the slice along each direction (a in [-extent, extent]).
    resolution : int or (int, int)
        Grid points along each direction.
    axis_names : pair of str, optional
        Labels for plots (default ``z_i`` or ``u``, ``v``).
    **kwargs
        Passed to :func:`find_attractors`.
    """
    c = np.asarray(center, dtype=np.float64).reshape(-1)
    M = c.size
    dirs, names = [], []
    for k, ax in enumerate(axes):
        if isinstance(ax, (int, np.integer)):
            if not 0 <= ax < M:
                raise ValueError(f"axis index {ax} outside the latent dimension M = {M}")
            d = np.zeros(M)
            d[ax] = 1.0
            names.append(f"$z_{{{ax + 1}}}$")
        else:
            d = np.asarray(ax, dtype=np.float64).reshape(-1)
            if d.size != M or not np.linalg.norm(d) > 0:
                raise ValueError(f"a slice direction must be a non-zero vector of length M = {M}")
            names.append("uv"[k])
        dirs.append(d)
    ex = np.broadcast_to(np.asarray(extent, dtype=np.float64), (2,))
    res = np.broadcast_to(np.asarray(resolution), (2,))
    if not np.all(ex > 0) or not np.all(res >= 2):
        raise ValueError(f"need extent > 0 and resolution >= 2, got {extent}, {resolution}")
    a = np.linspace(-ex[0], ex[0], int(res[0]))
    b = np.linspace(-ex[1], ex[1], int(res[1]))
    B, A = np.meshgrid(b, a, indexing="ij")  # (ny, nx)
    grid = c + A[..., None] * dirs[0] + B[..., None] * dirs[1]  # (ny, nx, M)
    report = find_attractors(model, grid.reshape(-1, M), **kwargs)
    return BasinMap(a=a, b=b, center=c, u=dirs[0], v=dirs[1], labels=report.labels.reshape(B.shape),
                    report=report, axis_names=tuple(axis_names) if axis_names else tuple(names))
