"""A fixed point or k-cycle of a piecewise-linear map, with its stability, in latent and data units.

Solving one region sequence exactly: with the patterns ``D_1 .. D_k`` assumed for the cycle points
``z_1 .. z_k`` and ``F = J(D_t) z + c(D_t)`` on each, the k-step map is affine,
``z_{k+1} = P z_1 + q`` with ``P = J_k ... J_1``, so a k-cycle through these regions solves
``(I - P) z_1 = q``. The candidate is a true cycle when every ``z_t`` lies in the region assumed for
it (Eisenmann et al., NeurIPS 2023, eq. 4-6). Its stability is that of ``P``, the Jacobian of the
k-step map at the cycle.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from dsrecon.analysis.regions import PiecewiseLinearMap

__all__ = ["Cycle", "solve_region_cycles", "DataUnits"]

# |lambda| within this of 1 counts as neither stable nor unstable (non-hyperbolic)
MARGINAL = 1e-9


@dataclass(frozen=True)
class DataUnits:
    """How a model's observations map to the data's original units: ``x = x_model * std + mean``.

    Without mean/std (``DataUnits()``) the data units are the model's own (e.g. z-scored) ones.
    """

    mean: np.ndarray | None = None
    std: np.ndarray | None = None

    def __post_init__(self):
        if (self.mean is None) != (self.std is None):
            raise ValueError("give both data_mean and data_std (the data's standardization), or neither")
        if self.mean is not None:
            mean = np.asarray(self.mean, dtype=np.float64).reshape(-1)
            std = np.asarray(self.std, dtype=np.float64).reshape(-1)
            if mean.shape != std.shape or not np.all(np.isfinite(mean)) or not np.all(std > 0):
                raise ValueError(f"data_mean and data_std must be finite vectors of one length with std > 0, got "
                                 f"shapes {mean.shape} and {std.shape}")
            object.__setattr__(self, "mean", mean)
            object.__setattr__(self, "std", std)

    def to_data(self, x: np.ndarray) -> np.ndarray:
        """``(..., N)`` model observations -> data units."""
        if self.mean is None:
            return np.asarray(x, dtype=np.float64)
        if x.shape[-1] != self.mean.size:
            raise ValueError(f"the model observes N = {x.shape[-1]} channels but data_mean/data_std have "
                             f"{self.mean.size}; give the statistics of the data the model was fitted on")
        return x * self.std + self.mean


@dataclass(frozen=True)
class Cycle:
    """A fixed point (``period == 1``) or a k-cycle of minimal period k.

    Attributes
    ----------
    latent : np.ndarray, shape ``(k, M)``
        The cycle points ``z_1 .. z_k`` in order (``F(z_t) = z_{t+1}``, ``F(z_k) = z_1``).
    observed : np.ndarray, shape ``(k, N)``
        ``model.observe`` of the points: the coordinates the model was trained in.
    data : np.ndarray, shape ``(k, N)``
        The same in the data's units (``observed * std + mean``; equal to ``observed`` without them).
    eigenvalues : np.ndarray, complex, shape ``(M,)``
        Of the k-step Jacobian ``J_k ... J_1`` at the cycle, by decreasing modulus.
    patterns : np.ndarray, bool, shape ``(k, P)``
        The activation pattern (linear region) of each point.
    """

    latent: np.ndarray
    observed: np.ndarray
    data: np.ndarray
    eigenvalues: np.ndarray
    patterns: np.ndarray

    @property
    def period(self) -> int:
        return self.latent.shape[0]

    @property
    def n_unstable(self) -> int:
        """Number of unstable directions: eigenvalues with modulus above 1."""
        return int(np.sum(np.abs(self.eigenvalues) > 1 + MARGINAL))

    @property
    def stability(self) -> str:
        """``stable`` (all |lambda| < 1), ``unstable`` (all > 1), ``saddle`` (some above, some below),
        or ``non-hyperbolic`` (some |lambda| = 1, within 1e-9, and none above)."""
        mod = np.abs(self.eigenvalues)
        if np.all(mod < 1 - MARGINAL):
            return "stable"
        if np.all(mod > 1 + MARGINAL):
            return "unstable"
        if self.n_unstable > 0:
            return "saddle"
        return "non-hyperbolic"

    @property
    def is_focus(self) -> bool:
        """A complex-conjugate eigenvalue pair (rotation around the point)."""
        return bool(np.any(np.abs(self.eigenvalues.imag) > 1e-12))

    @property
    def kind(self) -> str:
        """E.g. ``stable focus``, ``saddle (1 unstable)``, ``saddle focus (2 unstable)``, ``unstable node``."""
        shape = "focus" if self.is_focus else "node"
        if self.stability == "saddle":
            return ("saddle focus" if self.is_focus else "saddle") + f" ({self.n_unstable} unstable)"
        return f"{self.stability} {shape}"

    def to_dict(self) -> dict:
        """JSON-ready summary (eigenvalues as ``[real, imag]`` pairs)."""
        return {"period": self.period, "kind": self.kind, "stability": self.stability,
                "n_unstable": self.n_unstable, "latent": self.latent.tolist(),
                "observed": self.observed.tolist(), "data": self.data.tolist(),
                "eigenvalues": [[float(v.real), float(v.imag)] for v in self.eigenvalues],
                "eigenvalue_moduli": np.abs(self.eigenvalues).tolist()}


def solve_region_cycles(regions: PiecewiseLinearMap, patterns: torch.Tensor):
    """Solve the k-cycle equation of each region sequence and test it.

    Parameters
    ----------
    regions : PiecewiseLinearMap
    patterns : torch.Tensor, bool, shape ``(B, k, P)``
        The assumed region of each of the k cycle points, for B sequences.

    Returns
    -------
    points : torch.Tensor, float64, shape ``(B, k, M)``
        ``z_1`` from ``(I - P) z_1 = q`` and ``z_{t+1} = F(z_t)`` with the true map (NaN where the
        system is singular).
    found : torch.Tensor, bool, shape ``(B, k, P)``
        The true pattern of each point: the regions the solution points to.
    consistent : torch.Tensor, bool, shape ``(B,)``
        ``found == patterns`` everywhere and the orbit closes (``F^k(z_1) = z_1`` to 1e-8 relative).
    product : torch.Tensor, float64, shape ``(B, M, M)``
        ``J_k ... J_1`` of the assumed regions (the k-step Jacobian where consistent).
    """
    B, k, P = patterns.shape
    M = regions.dim
    J, c = regions.affine(patterns.reshape(B * k, P))
    J, c = J.reshape(B, k, M, M), c.reshape(B, k, M)
    eye = torch.eye(M, dtype=J.dtype, device=J.device)
    product, offset = eye.expand(B, M, M), torch.zeros(B, M, dtype=J.dtype, device=J.device)
    for t in range(k):
        product = J[:, t] @ product  # (B, M, M)
        offset = (J[:, t] @ offset.unsqueeze(-1)).squeeze(-1) + c[:, t]  # (B, M)
    z1, info = torch.linalg.solve_ex(eye - product, offset)  # (B, M)
    z1 = torch.where((info == 0).unsqueeze(-1), z1, torch.full_like(z1, float("nan")))
    points = [z1]
    for _ in range(k):
        points.append(regions.step(points[-1]))
    orbit = torch.stack(points, dim=1)  # (B, k + 1, M)
    found = regions.pattern(orbit[:, :k])  # (B, k, P)
    scale = 1 + orbit[:, 0].abs().amax(dim=-1)
    closes = (orbit[:, k] - orbit[:, 0]).abs().amax(dim=-1) <= 1e-8 * scale  # (B,)
    finite = torch.isfinite(orbit).all(dim=-1).all(dim=-1)
    consistent = (found == patterns).all(dim=-1).all(dim=-1) & closes & finite
    return orbit[:, :k], found, consistent, product


def minimal_period(points: torch.Tensor, tol: float = 1e-8) -> int:
    """The smallest d dividing k with ``z_{1+d} = z_1`` (to ``tol`` relative), ``(k, M)`` points."""
    k = points.shape[0]
    scale = 1 + float(points.abs().max())
    for d in range(1, k):
        if k % d == 0 and float((points[d] - points[0]).abs().max()) <= tol * scale:
            return d
    return k


def same_cycle(a: np.ndarray, b: np.ndarray, tol: float = 1e-6) -> bool:
    """Whether two ``(k, M)`` point sequences are one cycle (equal up to a cyclic shift)."""
    if a.shape != b.shape:
        return False
    scale = 1 + max(np.abs(a).max(), np.abs(b).max())
    return any(np.abs(np.roll(b, -s, axis=0) - a).max() <= tol * scale for s in range(a.shape[0]))


def make_cycle(model, units: DataUnits, points: torch.Tensor, patterns: torch.Tensor,
               product: torch.Tensor) -> Cycle:
    """A :class:`Cycle` from one consistent solution (``(k, M)`` points, ``(k, P)`` patterns,
    ``(M, M)`` k-step Jacobian), its points rotated so that the one with the smallest first
    coordinate comes first (a canonical order for comparing cycles)."""
    first = int(torch.argmin(points[:, 0]))
    points, patterns = torch.roll(points, -first, 0), torch.roll(patterns, -first, 0)
    eig = torch.linalg.eigvals(product).cpu().numpy()
    eig = eig[np.argsort(-np.abs(eig), kind="stable")]
    observed = observe(model, points)
    return Cycle(latent=points.cpu().numpy(), observed=observed, data=units.to_data(observed),
                 eigenvalues=eig, patterns=patterns.cpu().numpy())


def observe(model, z: torch.Tensor) -> np.ndarray:
    """``model.observe`` of float64 states ``(S, M)``, in the model's dtype, returned as float64 NumPy."""
    if model is None or not hasattr(model, "observe"):
        return z.cpu().numpy()
    param = next(model.parameters())
    with torch.no_grad():
        return model.observe(z.to(device=param.device, dtype=param.dtype)).double().cpu().numpy()
