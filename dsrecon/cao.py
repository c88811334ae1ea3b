"""Embedding dimension of a scalar series by Cao's method (E1 saturation, E2 for noise).

Kennel's false-nearest-neighbour fraction (``dsrecon.embedding.false_nearest_neighbours``) needs a
threshold, and on a noisy recording the fraction levels off above any fixed one: noise makes some
neighbours false in every dimension (a 3.7 % and an 11.5 % floor on two real ECG leads, issue 16).
Cao (1997) replaces the threshold by a ratio that saturates: with ``y_i(d)`` the delay vector
``(x_i, x_{i+tau}, ..., x_{i+(d-1) tau})`` and ``n(i, d)`` its nearest neighbour (maximum norm),

    a(i, d) = ||y_i(d+1) - y_n(d+1)|| / ||y_i(d) - y_n(d)||,     E(d) = mean_i a(i, d),
    E1(d) = E(d+1) / E(d).

While ``d`` is too small, neighbours are false and ``a`` is large, so ``E(d)`` falls with ``d``
and ``E1(d) < 1``; once ``d`` unfolds the attractor, ``E(d)`` stops changing and ``E1(d)`` is
about 1. Noise adds the same amount to every ``a``, so it shifts ``E`` but not where ``E1``
saturates. The companion statistic

    E*(d) = mean_i |x_{i+d tau} - x_{n(i,d)+d tau}|,     E2(d) = E*(d+1) / E*(d)

is about 1 for every ``d`` when the series is noise (future values are independent of the
neighbour relation) and differs from 1 at some ``d`` for deterministic data.

Reference
---------
Cao, L. Practical method for determining the minimum embedding dimension of a scalar time series.
Physica D 110, 43-50 (1997).
Kennel, M. B., Brown, R., Abarbanel, H. D. I. Phys. Rev. A 45, 3403 (1992) (the FNN criterion
this replaces for noisy data).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["CaoResult", "cao_statistics", "cao_embedding_dim"]

# E1(d) >= E1_THRESHOLD counts as saturated. Cao reads the dimension off a plot; a number is needed
# here. 0.9 puts the choice where E1 has risen to within 10 % of its plateau: 2 for a sine, 3 for
# Lorenz-63 x (plain and, with dsrecon.preparation's noise floor, with 5 % noise) and for Rossler x
# with 5 % noise, 3 for the Santa Fe laser and 4 for the GTF paper's ECG lead (tests/test_cao.py),
# within the dimensions quoted in the literature for these series.
E1_THRESHOLD = 0.9
# max |E2(d) - 1| below this: no d where the future depends on the neighbour relation, i.e. the
# series looks like noise (white noise gives about 0.02 on 10,000 points, Lorenz-63 x about 0.9).
E2_NOISE_TOLERANCE = 0.1


@dataclass(frozen=True)
class CaoResult:
    """Cao's statistics for ``d = 1 .. max_dim`` and the dimension they give.

    Attributes
    ----------
    dimension : int
        Smallest ``d`` with ``E1(d) >= threshold`` (``max_dim`` + 1 if none: see ``saturated``).
    e1, e2 : tuple of float, length ``max_dim``
        ``E1(d)`` and ``E2(d)``, entry ``d - 1``.
    delay : int
        Delay in samples the statistics were computed with.
    saturated : bool
        Whether ``E1`` reached the threshold up to ``max_dim``.
    looks_like_noise : bool
        ``max |E2(d) - 1| < E2_NOISE_TOLERANCE``: no determinism detected.
    """

    dimension: int
    e1: tuple
    e2: tuple
    delay: int
    saturated: bool
    looks_like_noise: bool

    def to_dict(self) -> dict:
        return {"dimension": self.dimension, "e1": list(self.e1), "e2": list(self.e2), "delay": self.delay,
                "saturated": self.saturated, "looks_like_noise": self.looks_like_noise}


def _scalar(x) -> np.ndarray:
    x = np.asarray(getattr(x, "x", x), dtype=np.float64)
    if x.ndim == 2 and x.shape[1] == 1:
        x = x[:, 0]
    if x.ndim != 1:
        raise ValueError(f"Cao's method needs a scalar series (T,) or (T, 1), got shape {x.shape}; "
                         "pass one column, e.g. x[:, 0]")
    if not np.all(np.isfinite(x)):
        raise ValueError("Cao's method needs a finite series; remove or interpolate NaN/inf first")
    return x


def cao_statistics(x, delay: int, max_dim: int = 10, *, theiler: int | None = None,
                   min_distance: float = 0.0, n_points: int = 5_000) -> tuple[np.ndarray, np.ndarray]:
    """``E1(d)`` and ``E2(d)`` of Cao (1997) for ``d = 1 .. max_dim``.

    Parameters
    ----------
    x : array ``(T,)`` / ``(T, 1)`` or Trajectory
        Scalar series.
    delay : int
        Embedding delay ``tau`` in samples (e.g. ``dsrecon.embedding.choose_delay(x)``).
    max_dim : int
        Largest ``d``; ``E(max_dim + 1)`` is computed as well.
    theiler : int, optional
        Neighbours closer in time than this many samples are skipped (default ``delay``). Cao's
        paper uses none; on a densely sampled flow the nearest neighbour is otherwise the next
        sample on the same orbit, whose ``a(i, d)`` is 1 in every dimension, and ``E1`` would
        saturate at ``d = 1``.
    n_points : int
        Reference points ``i`` per dimension, evenly spaced in time (the neighbour search covers
        all points).

    Returns
    -------
    (e1, e2) : two arrays of shape ``(max_dim,)``.

    Neighbours at distance 0 (repeated values of quantized data, or a sampled periodic signal
    repeating up to rounding: below ``1e-9`` of the series' std) are skipped, as Cao prescribes
    for zero distances, and the next one is taken.

    ``min_distance`` (in the units of ``x``) makes the ratio noise-aware: distances below it
    count as ``min_distance`` in both numerator and denominator, since below the noise level the
    ratio of two distances measures the noise, not the geometry (``choose_embedding`` sets it from
    the noise level). 0 is Cao's original statistic.
    """
    from scipy.spatial import cKDTree

    series = _scalar(x)
    delay, theiler = int(delay), int(delay if theiler is None else theiler)
    if delay < 1 or max_dim < 1 or theiler < 0:
        raise ValueError(f"need delay >= 1, max_dim >= 1 and theiler >= 0, got {delay}, {max_dim}, {theiler}")
    need = (max_dim + 1) * delay + 2 * theiler + 10
    if len(series) < need:
        raise ValueError(f"Cao's method with max_dim = {max_dim}, delay = {delay} needs T >= {need} points, "
                         f"got {len(series)}; use a longer series, a smaller max_dim or delay")
    repeat = 1e-9 * series.std()  # closer is a repeated value (up to rounding), skipped
    e_mean = np.empty(max_dim + 1)  # E(d), d = 1 .. max_dim + 1
    e_star = np.empty(max_dim + 1)  # E*(d)
    for d in range(1, max_dim + 2):
        n = len(series) - d * delay  # vectors that also have their (d+1)-th coordinate
        emb = np.stack([series[k * delay:k * delay + n] for k in range(d)], axis=1)  # (n, d)
        nxt = series[d * delay:d * delay + n]  # (n,) the (d+1)-th coordinate
        query = np.unique(np.linspace(0, n - 1, min(n_points, n)).astype(np.int64))  # (Q,)
        dist, idx = _admissible_neighbour(cKDTree(emb), emb, query, theiler, repeat)
        gap = np.abs(nxt[query] - nxt[idx])  # (Q,)
        floor = max(min_distance, 0.0)  # distances below the noise scale count as the noise scale
        e_mean[d - 1] = np.mean(np.maximum(np.maximum(dist, gap), floor) / np.maximum(dist, floor))
        e_star[d - 1] = np.mean(gap)
    with np.errstate(divide="ignore", invalid="ignore"):
        e1 = e_mean[1:] / e_mean[:-1]
        e2 = e_star[1:] / e_star[:-1]
    return e1, e2


def _admissible_neighbour(tree, emb: np.ndarray, query: np.ndarray, theiler: int, repeat: float):
    """Nearest neighbour (max norm) of each query point outside the Theiler window and farther
    than ``repeat``: ``(dist, index)``, both ``(Q,)``. Widens the search until every point has one."""
    k = min(2 * theiler + 8, len(emb))
    while True:
        dist, idx = tree.query(emb[query], k=k, p=np.inf)  # (Q, k)
        ok = (np.abs(idx - query[:, None]) > theiler) & (dist > repeat)
        if ok.any(axis=1).all() or k >= len(emb):
            break
        k = min(4 * k, len(emb))
    first = ok.argmax(axis=1)
    found = ok.any(axis=1)
    rows = np.arange(len(query))
    return dist[rows, first][found], idx[rows, first][found]


def cao_embedding_dim(x, delay: int, max_dim: int = 10, *, threshold: float = E1_THRESHOLD,
                      **kwargs) -> CaoResult:
    """Minimum embedding dimension by Cao (1997): the smallest ``d`` with ``E1(d) >= threshold``.

    Parameters
    ----------
    x : array ``(T,)`` / ``(T, 1)`` or Trajectory
    delay : int
        Delay in samples.
    max_dim : int
        Largest dimension tested (default 10).
    threshold : float
        Saturation level of ``E1`` (default ``E1_THRESHOLD`` = 0.9; see the module constant for
        how it was chosen).
    **kwargs
        ``theiler``, ``n_points`` of :func:`cao_statistics`.

    Returns
    -------
    CaoResult
        The dimension with the statistics behind it. ``saturated`` is False (and ``dimension``
        is ``max_dim + 1``) when ``E1`` never reaches the threshold; ``looks_like_noise`` flags a
        series in which ``E2`` finds no determinism, for which any dimension is arbitrary.
    """
    e1, e2 = cao_statistics(x, delay, max_dim, **kwargs)
    above = np.flatnonzero(e1 >= threshold)
    saturated = bool(above.size)
    dimension = int(above[0]) + 1 if saturated else max_dim + 1
    noise = bool(np.all(np.abs(e2 - 1) < E2_NOISE_TOLERANCE))
    return CaoResult(dimension=dimension, e1=tuple(float(v) for v in e1), e2=tuple(float(v) for v in e2),
                     delay=int(delay), saturated=saturated, looks_like_noise=noise)
