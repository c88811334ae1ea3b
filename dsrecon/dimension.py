"""Correlation dimension (Grassberger-Procaccia) of a series or a generated orbit.

A geometry check next to D_stsp: a reconstruction of Lorenz-63 should have a correlation dimension
near the true attractor's (~2.05), whatever its state-space overlap.

References
----------
Grassberger, Procaccia. Characterization of strange attractors. Phys. Rev. Lett. 50, 346 (1983).
Grassberger, Procaccia. Measuring the strangeness of strange attractors. Physica D 9, 189 (1983).
Theiler. Spurious dimension from correlation algorithms applied to limited time-series data.
Phys. Rev. A 34, 2427 (1986) (the temporal exclusion window).
"""

from __future__ import annotations

import numpy as np
import torch

from dsrecon.rosenstein import as_series64

__all__ = ["correlation_sum", "correlation_dimension"]


def _as_points(x, emb_dim: int, lag: int, device) -> torch.Tensor:
    t = as_series64(x, device)  # (T, N)
    if emb_dim < 1 or lag < 1:
        raise ValueError(f"need emb_dim >= 1 and lag >= 1, got {emb_dim}, {lag}")
    m = t.shape[0] - (emb_dim - 1) * lag
    if m < 2:
        raise ValueError(f"series of length {t.shape[0]} is too short for emb_dim = {emb_dim}, lag = {lag}")
    return torch.cat([t[k * lag:k * lag + m] for k in range(emb_dim)], dim=1)  # (m, emb_dim * N)


def correlation_sum(points: torch.Tensor, radii: torch.Tensor, min_tsep: int = 0, chunk: int = 2048) -> torch.Tensor:
    """Fraction of pairs ``(i, j)``, ``j - i > min_tsep``, closer than each radius, ``(R,)``.

    ``C(r) = #{pairs with ||X_i - X_j|| < r} / #{pairs}``, counted chunk by chunk (memory
    ``chunk x T``); radii must be ascending.
    """
    m = points.shape[0]
    counts = torch.zeros(radii.numel() + 1, dtype=torch.int64, device=points.device)
    idx = torch.arange(m, device=points.device)
    n_pairs = 0
    for start in range(0, m, chunk):
        rows = idx[start:start + chunk]
        d = torch.cdist(points[rows], points)  # (C, m)
        keep = idx[None, :] - rows[:, None] > min_tsep  # (C, m) each pair once
        bucket = torch.bucketize(d[keep], radii, right=True)  # r_{k-1} <= d < r_k -> k
        counts += torch.bincount(bucket, minlength=radii.numel() + 1)
        n_pairs += int(keep.sum())
    if n_pairs == 0:
        raise ValueError(f"no pairs with time separation > min_tsep = {min_tsep}; use more points")
    return counts.cumsum(0)[:-1].double() / n_pairs  # d < r_k  <=>  bucket <= k


def correlation_dimension(
    x,
    radii=None,
    *,
    emb_dim: int = 1,
    lag: int = 1,
    min_tsep: int = 0,
    max_points: int = 10_000,
    device=None,
) -> float:
    r"""Correlation dimension: slope of ``log C(r)`` against ``log r`` (Grassberger-Procaccia).

    Parameters
    ----------
    x : array or tensor, shape ``(T,)`` or ``(T, N)``
        Series; delay-embedded with ``emb_dim`` and ``lag`` (``emb_dim=1``: the vectors as they are).
    radii : array, optional
        Ascending radii of the scaling region. Default (as nolds ``corr_dim``): geometric steps of
        factor 1.03 from 0.1 to 0.5 times the data's standard deviation (root mean variance over
        coordinates).
    min_tsep : int
        Theiler window: pairs closer than ``min_tsep + 1`` steps in time are left out, so that
        temporal correlation does not lower the estimate.
    max_points : int
        Only the first ``max_points`` embedded vectors are used (pairs grow as T^2).
    device : torch.device, optional

    Returns
    -------
    float
        The least-squares slope over the radii with ``C(r) > 0``.
    """
    points = _as_points(x, emb_dim, lag, device)[:max_points]  # (m, D)
    if radii is None:
        sd = float(points.var(dim=0, unbiased=False).mean().sqrt())
        n_r = int(np.floor(np.log(5.0) / np.log(1.03))) + 1
        radii = 0.1 * sd * 1.03 ** np.arange(n_r)
    radii = np.asarray(radii, dtype=np.float64)
    if radii.ndim != 1 or radii.size < 2 or np.any(np.diff(radii) <= 0) or radii[0] <= 0:
        raise ValueError(f"radii must be at least two positive ascending values, got {radii!r}")
    c = correlation_sum(points, torch.as_tensor(radii, device=points.device), min_tsep).cpu().numpy()
    ok = c > 0
    if ok.sum() < 2:
        raise ValueError("fewer than two radii have pairs closer than them; use larger radii or more points")
    return float(np.polyfit(np.log(radii[ok]), np.log(c[ok]), 1)[0])
