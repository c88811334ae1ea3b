"""Delay embedding of low-dimensional recordings, and how to choose its delay and dimension.

Takens' theorem lets a scalar series ``x`` stand in for the unobserved state through delay vectors
``x_emb[t] = (x[t], x[t + d1], ..., x[t + dk])`` (docs/method.md section 1). The delay is chosen as the first
minimum of the time-delayed mutual information (Fraser & Swinney 1986), with the first 1/e
crossing of the autocorrelation as fallback; the dimension as the smallest one whose fraction of
false nearest neighbours falls below a threshold (Kennel, Brown & Abarbanel 1992).

References
----------
Takens, F. Detecting strange attractors in turbulence. Lecture Notes in Mathematics 898 (1981).
Fraser, A. M., Swinney, H. L. Independent coordinates for strange attractors from mutual
information. Phys. Rev. A 33, 1134 (1986).
Kennel, M. B., Brown, R., Abarbanel, H. D. I. Determining embedding dimension for phase-space
reconstruction using a geometrical construction. Phys. Rev. A 45, 3403 (1992).
Hegger, R., Kantz, H., Schreiber, T. Practical implementation of nonlinear time series methods:
the TISEAN package. Chaos 9, 413 (1999).
"""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np

from dsrecon.data import Trajectory


def _as_2d(x) -> np.ndarray:
    x = x.x if isinstance(x, Trajectory) else np.asarray(x, dtype=float)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(f"expected a series of shape (T,) or (T, N), got {x.shape}")
    return x


def _as_scalar_series(x, what: str) -> np.ndarray:
    x = _as_2d(x)
    if x.shape[1] != 1:
        raise ValueError(
            f"{what} needs a scalar series (T,) or (T, 1), got {x.shape}; pass one column, e.g. x[:, 0]"
        )
    return x[:, 0]


def delay_embed(x, delays):
    """Delay-embed ``x``: ``x_emb[t] = (x[t + d_0], x[t + d_1], ..., x[t + d_k])``.

    Parameters
    ----------
    x : np.ndarray ``(T,)`` / ``(T, N)`` or Trajectory
        The recording. With ``N > 1`` each delay contributes all N channels.
    delays : sequence of int
        Non-negative, distinct lags in samples, in the order of the output columns, e.g.
        ``(0, 20, 68, 55, 10)`` (the GTF paper's ECG embedding). They need not be sorted.

    Returns
    -------
    Same type as ``x``: an array of shape ``(T - max(delays), len(delays) * N)`` with columns
    ordered delay-major (``[x[t + d_0, :], x[t + d_1, :], ...]``), or a Trajectory whose
    ``meta["delays"]`` records the delays (and whose standardization mean/std are repeated per
    delay, so ``unstandardize`` still works).
    """
    delays = [int(d) for d in np.atleast_1d(delays)]
    if not delays or min(delays) < 0 or len(set(delays)) != len(delays):
        raise ValueError(f"delays must be distinct non-negative integers, got {delays}")
    data = _as_2d(x)
    n_out = data.shape[0] - max(delays)
    if n_out < 2:
        raise ValueError(
            f"series of T = {data.shape[0]} steps is too short for max delay {max(delays)}: need "
            f"T >= {max(delays) + 2}"
        )
    emb = np.concatenate([data[d:d + n_out] for d in delays], axis=1)  # (T - max d, k N)
    if not isinstance(x, Trajectory):
        return emb
    meta = {**x.meta, "delays": delays}
    for key in ("mean", "std"):
        if key in meta:
            meta[key] = list(meta[key]) * len(delays)
    return replace(x, x=emb, meta=meta)


def mutual_information(x, max_lag: int, n_bins: int = 32) -> np.ndarray:
    """Time-delayed mutual information ``I(x_t; x_{t+tau})`` in nats, ``tau = 0 .. max_lag``.

    Histogram estimate (Fraser & Swinney 1986; TISEAN's ``mutual``) of
    ``I(tau) = sum_ij p_ij(tau) log(p_ij(tau) / (p_i p_j))`` on ``n_bins`` equal bins spanning the
    range of ``x``, with *linear binning*: each sample splits its weight between the two nearest
    bin centres in proportion to its distance. Hard binning makes ``I(tau)`` jump whenever points
    cross a bin edge, which on smooth or periodic signals puts spurious minima at small lags (a
    sine of period 100 samples gave a "first minimum" at lag 3-7 instead of 25); linear binning
    makes the estimate continuous in the data and removes them. The default of 32 bins puts the
    first minimum of Lorenz-63's x at dt = 0.01 at 17 samples, the value usually quoted.

    Returns
    -------
    np.ndarray, shape ``(max_lag + 1,)``.
    """
    x = _as_scalar_series(x, "mutual_information")
    if max_lag < 1 or max_lag > len(x) - 2:
        raise ValueError(f"max_lag must be in 1 .. T - 2 = {len(x) - 2}, got {max_lag}")
    if n_bins < 2:
        raise ValueError(f"n_bins must be >= 2, got {n_bins}")
    pos = (x - x.min()) / (x.max() - x.min()) * (n_bins - 1)  # (T,) in bin-centre units
    low = np.minimum(pos.astype(np.int64), n_bins - 2)  # (T,) lower neighbouring centre
    frac = pos - low  # (T,) weight of the upper centre
    n = len(x)
    mi = np.empty(max_lag + 1)
    for lag in range(max_lag + 1):
        ia, wa, ib, wb = low[: n - lag], frac[: n - lag], low[lag:], frac[lag:]
        joint = np.zeros(n_bins * n_bins)
        for da, ca in ((0, 1 - wa), (1, wa)):
            for db, cb in ((0, 1 - wb), (1, wb)):
                joint += np.bincount((ia + da) * n_bins + ib + db, weights=ca * cb, minlength=n_bins**2)
        p = joint.reshape(n_bins, n_bins) / joint.sum()  # (n_bins, n_bins)
        pa, pb = p.sum(axis=1, keepdims=True), p.sum(axis=0, keepdims=True)
        nz = p > 0
        mi[lag] = np.sum(p[nz] * np.log(p[nz] / (pa @ pb)[nz]))
    return mi


def autocorrelation(x, max_lag: int) -> np.ndarray:
    """Normalized autocorrelation ``r(tau)``, ``tau = 0 .. max_lag`` (``r(0) = 1``), via FFT."""
    x = _as_scalar_series(x, "autocorrelation")
    x = x - x.mean()
    n = len(x)
    spec = np.fft.rfft(x, 2 * n)
    acov = np.fft.irfft(spec * np.conj(spec))[: max_lag + 1]
    return acov / acov[0]


def choose_delay(x, max_lag: int | None = None, n_bins: int = 32) -> int:
    """Embedding delay (samples): first minimum of the time-delayed mutual information.

    Fraser & Swinney (1986): at the first minimum of ``I(tau)`` the delayed coordinate adds the
    most new information while staying dynamically related. If ``I`` has no local minimum up to
    ``max_lag`` the first lag where the autocorrelation drops below 1/e is used instead (with a
    warning), and if neither exists the call fails asking for a larger ``max_lag``.

    Parameters
    ----------
    x : array ``(T,)`` / ``(T, 1)`` or Trajectory
    max_lag : int, optional
        Largest lag searched (default ``min(T // 10, 1000)``).
    n_bins : int
        Histogram bins of ``mutual_information``.

    Returns
    -------
    int, the delay in samples (>= 1).
    """
    series = _as_scalar_series(x, "choose_delay")
    if max_lag is None:
        max_lag = max(2, min(len(series) // 10, 1000))
    mi = mutual_information(series, max_lag, n_bins)
    for lag in range(1, max_lag):
        if mi[lag] < mi[lag - 1] and mi[lag] <= mi[lag + 1]:
            return lag
    acf = autocorrelation(series, max_lag)
    below = np.flatnonzero(acf < 1.0 / np.e)
    if below.size:
        warnings.warn(
            f"mutual information has no minimum up to lag {max_lag}; using the autocorrelation's "
            f"first 1/e crossing, {int(below[0])} samples",
            stacklevel=2,
        )
        return int(below[0])
    raise ValueError(
        f"neither the mutual information has a minimum nor the autocorrelation falls below 1/e "
        f"up to lag {max_lag}; pass a larger max_lag (T = {len(series)})"
    )


def false_nearest_neighbours(
    x,
    delay: int,
    max_dim: int = 10,
    *,
    rtol: float = 15.0,
    atol: float = 2.0,
    theiler: int | None = None,
    n_points: int = 10_000,
) -> np.ndarray:
    """Fraction of false nearest neighbours for embedding dimensions ``1 .. max_dim``.

    Kennel, Brown & Abarbanel (1992): embed with ``(0, delay, ..., (d-1) delay)``; for each point
    take its nearest neighbour at distance ``R_d``; the pair is *false* if adding the next delay
    coordinate separates it, ``|x[t + d delay] - x[n + d delay]| / R_d > rtol`` (criterion 1), or
    if the new distance ``R_{d+1}`` exceeds ``atol`` times the attractor size ``std(x)``
    (criterion 2). The paper's ``rtol = 15``, ``atol = 2`` are the defaults. Neighbours closer in
    time than ``theiler`` samples (default: ``delay``) are excluded, since on a densely sampled
    flow they lie along the same orbit and would make every dimension look sufficient.

    Parameters
    ----------
    x : array ``(T,)`` / ``(T, 1)`` or Trajectory
    delay : int
        Embedding delay in samples (e.g. ``choose_delay(x)``).
    max_dim : int
        Largest dimension tested.
    rtol, atol : float
        Kennel's ``R_tol`` and ``A_tol``.
    theiler : int, optional
        Temporal exclusion window in samples.
    n_points : int
        Reference points per dimension (evenly spaced in time; the tree holds all points).

    Returns
    -------
    np.ndarray, shape ``(max_dim,)``: entry ``d - 1`` is the false fraction in dimension ``d``.
    """
    from scipy.spatial import cKDTree

    series = _as_scalar_series(x, "false_nearest_neighbours")
    theiler = delay if theiler is None else int(theiler)
    if delay < 1 or max_dim < 1:
        raise ValueError(f"delay and max_dim must be >= 1, got {delay} and {max_dim}")
    need = max_dim * delay + 2 * theiler + 3
    if len(series) < need:
        raise ValueError(f"need T >= {need} points for max_dim={max_dim}, delay={delay}; got {len(series)}")
    size = series.std()
    fractions = np.empty(max_dim)
    for d in range(1, max_dim + 1):
        n = len(series) - d * delay  # points that also have the (d+1)-th coordinate
        emb = np.stack([series[i * delay:i * delay + n] for i in range(d)], axis=1)  # (n, d)
        nxt = series[d * delay:d * delay + n]  # (n,)
        query = np.unique(np.linspace(0, n - 1, min(n_points, n)).astype(np.int64))
        # of the 2 theiler + 2 nearest points at most 2 theiler + 1 are within the window
        k = min(2 * theiler + 2, n)
        dist, idx = cKDTree(emb).query(emb[query], k=k)  # (Q, k)
        outside = np.abs(idx - query[:, None]) > theiler
        first = outside.argmax(axis=1)
        rows = np.arange(len(query))
        r_d, nb = dist[rows, first], idx[rows, first]
        gap = np.abs(nxt[query] - nxt[nb])
        with np.errstate(divide="ignore", invalid="ignore"):
            crit1 = np.where(r_d > 0, gap / r_d > rtol, gap > 0)
        crit2 = np.sqrt(r_d**2 + gap**2) / size > atol
        fractions[d - 1] = np.mean(crit1 | crit2)
    return fractions


def choose_embedding_dim(
    x, delay: int, threshold: float = 0.01, max_dim: int = 10, **fnn_kwargs
) -> int:
    """Smallest dimension whose false-nearest-neighbour fraction is below ``threshold``.

    Kennel et al. (1992) read the dimension off where the FNN fraction drops to (about) zero; 1%
    tolerates the residual false neighbours that noise and finite data leave. Keyword arguments go
    to ``false_nearest_neighbours``.

    Returns
    -------
    int, the embedding dimension.
    """
    fractions = false_nearest_neighbours(x, delay, max_dim, **fnn_kwargs)
    below = np.flatnonzero(fractions < threshold)
    if not below.size:
        raise ValueError(
            f"false-nearest-neighbour fraction stays above {threshold} up to dimension {max_dim} "
            f"(last: {fractions[-1]:.3f}); raise max_dim or threshold (noisy data keep a floor)"
        )
    return int(below[0]) + 1


__all__ = [
    "delay_embed", "mutual_information", "autocorrelation", "choose_delay",
    "false_nearest_neighbours", "choose_embedding_dim",
]
