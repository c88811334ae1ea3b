"""Look at a series before fitting it: size, sampling, time scales, chaos and noise.

``inspect_data(x, dt)`` returns a :class:`DataSummary` of what a reconstruction depends on, so that
``dsrecon fit`` can print it, store it (``data_summary.json``) and base its choices on it:

* ``T``, ``N`` and ``dt``, with whether ``dt`` is known (a physical sampling interval) or the
  default 1 (time counted in samples: rates are then *per step*);
* the time scales: first minimum of the time-delayed mutual information (Fraser & Swinney 1986)
  and first 1/e crossing of the autocorrelation, per channel, in samples;
* the largest Lyapunov exponent by Rosenstein et al. (1993), per time unit when ``dt`` is known,
  else per step (always labelled);
* a noise level per channel from the high-frequency floor of the power spectrum (:func:`noise_level`).

References
----------
Rosenstein, Collins, De Luca. A practical method for calculating largest Lyapunov exponents from
small data sets. Physica D 65, 117-134 (1993).
Fraser, Swinney. Independent coordinates for strange attractors from mutual information. Phys.
Rev. A 33, 1134 (1986).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["DataSummary", "inspect_data", "noise_level", "time_scales", "NOISE_METHOD"]

MAX_CHANNELS = 16  # time scales and noise are reported for the first 16 channels
ROSENSTEIN_POINTS = 10_000  # points of the lambda_max estimate (O(T) per neighbour window)
SAMPLES_PER_MI = 8  # thin the series for lambda_max to about this many samples per mutual-information time
FOLLOW_MI_TIMES = 40  # divergence curve followed for this many mutual-information times
SATURATION_MARGIN = 1.0  # e-folds below the plateau where the linear growth of the divergence ends
NOISE_METHOD = (
    "high-frequency floor: Hann-windowed periodogram, median over the top quarter of the "
    "frequencies / ln 2 = white-noise variance per unit bandwidth, times the whole band; "
    "reported as std of the noise / std of the series (an upper bound: signal power in the top "
    "quarter of the band counts as noise, as on coarsely sampled series)"
)


def noise_level(x) -> np.ndarray:
    """Observation-noise std per channel, as a fraction of the channel's std, ``(N,)``.

    White noise of variance ``s^2`` has a flat spectrum: every ordinate of the windowed
    periodogram ``P_k = |sum_t w_t x_t e^{-2 pi i k t / T}|^2 / sum_t w_t^2`` is exponentially
    distributed with mean ``s^2``. A flow sampled finely enough has almost no power in the top
    quarter of the band, so there the periodogram is the noise floor, and ``s^2 = median(P_k) /
    ln 2`` over those frequencies (the median of an exponential is ``ln 2`` times its mean; it
    ignores isolated spectral lines). The Hann window ``w`` keeps the leakage of the large
    low-frequency power out of the top of the band (without it a clean Lorenz-63 series reads as
    0.2 % noise). Where the signal itself reaches the top of the band (a coarsely sampled series
    such as the Santa Fe laser, or a map) the value is an upper bound.

    Parameters
    ----------
    x : array ``(T,)`` or ``(T, N)``, T >= 16

    Returns
    -------
    np.ndarray ``(N,)``: 0.05 for a series with 5 % added white noise, about 1 for white noise.
    """
    x = np.asarray(getattr(x, "x", x), dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[0] < 16:
        raise ValueError(f"noise_level needs a series (T,) or (T, N) with T >= 16, got shape {x.shape}")
    x = x - x.mean(axis=0)  # (T, N)
    w = np.hanning(x.shape[0])[:, None]  # (T, 1)
    p = np.abs(np.fft.rfft(w * x, axis=0)) ** 2 / np.sum(w**2)  # (T // 2 + 1, N)
    top = p[int(0.75 * p.shape[0]):]  # top quarter of the frequencies
    std = x.std(axis=0)
    return np.sqrt(np.median(top, axis=0) / math.log(2)) / np.where(std > 0, std, 1.0)


@dataclass(frozen=True)
class DataSummary:
    """What :func:`inspect_data` found; ``to_dict()`` is JSON-ready, ``str()`` the printed form.

    Attributes
    ----------
    n_steps, n_dims : int
        T and N.
    dt : float
        Sampling interval (1.0 when unknown).
    dt_known : bool
        False when ``dt`` is the default 1 sample: times are in steps, rates per step.
    time_unit : str
        ``"time unit"`` or ``"step"``: what times and rates below are counted in.
    lambda_max : float or None
        Largest Lyapunov exponent (Rosenstein), per ``time_unit``; None if it could not be
        estimated (``lambda_max_note`` says why).
    lambda_max_units : str
        ``"per time unit"`` or ``"per step"``.
    lambda_max_note : str
        Settings of the estimate, or why it is missing.
    mi_time, acf_time : tuple of (int or None)
        Per channel (first ``MAX_CHANNELS``): first minimum of the mutual information and first
        1/e crossing of the autocorrelation, in samples (None: not found up to ``T // 10``).
    noise : tuple of float
        Per channel (first ``MAX_CHANNELS``): noise std / series std (:func:`noise_level`).
    noise_method : str
        How ``noise`` was estimated.
    """

    n_steps: int
    n_dims: int
    dt: float
    dt_known: bool
    time_unit: str
    lambda_max: float | None
    lambda_max_units: str
    lambda_max_note: str
    mi_time: tuple
    acf_time: tuple
    noise: tuple
    noise_method: str = NOISE_METHOD

    def to_dict(self) -> dict:
        d = asdict(self)
        for key in ("mi_time", "acf_time", "noise"):
            d[key] = list(d[key])
        return d

    def __str__(self) -> str:
        def fmt(values, f="{}"):
            shown = ", ".join("n/a" if v is None else f.format(v) for v in values[:6])
            more = ", ..." if self.n_dims > 6 else ""
            return f"[{shown}{more}]"

        dt = f"dt = {self.dt:g}" if self.dt_known else "dt unknown: 1 = one sample (pass --dt for time units)"
        lam = "n/a" if self.lambda_max is None else f"{self.lambda_max:.4g} {self.lambda_max_units}"
        return "\n".join([
            f"data: T = {self.n_steps:,} steps, N = {self.n_dims}, {dt}",
            f"  time scales (samples): mutual-information minimum {fmt(self.mi_time)}, "
            f"autocorrelation 1/e {fmt(self.acf_time)}",
            f"  lambda_max (Rosenstein) {lam}  ({self.lambda_max_note})",
            f"  noise (std / std of the series, high-frequency floor) {fmt(self.noise, '{:.3f}')}",
        ])


def time_scales(series: np.ndarray) -> tuple[int | None, int | None]:
    """First mutual-information minimum and first autocorrelation 1/e crossing of a scalar
    series, in samples (None: not found up to ``min(T // 10, 1000)``).

    The same minimum as ``dsrecon.embedding.choose_delay``, found by computing the mutual
    information up to lag 50, then 250, then the full range, stopping at the first range that
    holds a minimum (the cost grows with the lags computed)."""
    from dsrecon.embedding import autocorrelation, mutual_information

    max_lag = max(2, min(len(series) // 10, 1000))
    mi_time = None
    for top in sorted({min(50, max_lag), min(250, max_lag), max_lag}):  # most minima come early
        mi = mutual_information(series, top)
        mi_time = next((lag for lag in range(1, top) if mi[lag] < mi[lag - 1] and mi[lag] <= mi[lag + 1]), None)
        if mi_time is not None:
            break
    below = np.flatnonzero(autocorrelation(series, max_lag) < 1.0 / math.e)
    return mi_time, (int(below[0]) if below.size else None)


def _fit_window(y: np.ndarray, start: int, smooth: int) -> tuple[int, int] | None:
    """The region ``[start, end)`` of a divergence curve ``y (K,)`` where it grows linearly, or None.

    ``y(k)`` (mean log distance of neighbours after ``k`` steps) has three parts: a transient while
    the separation turns onto the unstable direction (and, in noisy data, a jump at ``k = 1`` where
    the noise of the two points decorrelates), a straight stretch of slope ``lambda_max`` per step,
    and a plateau where the distances reach the attractor's size and stop growing. The plateau
    level ``P`` is the largest value of ``y`` averaged over ``smooth`` steps (the last values when
    the curve has not flattened yet within ``K``); the straight stretch ends where ``y`` first
    comes within ``SATURATION_MARGIN`` (e-folds) of ``P``: beyond that, distances are a sizeable
    fraction of the attractor and folding bends the curve. None when that point comes less than
    ``smooth`` steps after ``start`` (neighbours start too close to saturation: no linear stretch).
    """
    run = np.convolve(y, np.ones(smooth) / smooth, mode="valid")  # (K - smooth + 1,) running mean
    plateau = float(run[start:].max()) if run.size > start else float(y[start:].max())
    above = np.flatnonzero(y[start:] >= plateau - SATURATION_MARGIN)
    end = start + (int(above[0]) if above.size else len(y) - start)
    return (start, end + 1) if end - start >= smooth else None


def _lambda_max(x: np.ndarray, lag: int, dt: float) -> tuple[float | None, str]:
    """Rosenstein's lambda_max and a note of the settings (or of why it failed).

    The series is first thinned to ``stride = min(lag // SAMPLES_PER_MI, T // ROSENSTEIN_POINTS)``
    (at least 1), so that a finely sampled series spends its ``ROSENSTEIN_POINTS`` on a long
    stretch of the attractor (closer neighbours, more of them) while a mutual-information time
    still spans about ``SAMPLES_PER_MI`` samples. The divergence curve ``y(k)`` is followed for
    ``FOLLOW_MI_TIMES`` mutual-information times, long enough for the distances of most flows to
    reach the attractor's size, and the line is fitted from the first mutual-information time
    (past the transient onto the unstable direction) to the point where ``y`` comes within
    ``SATURATION_MARGIN`` e-folds of its plateau (:func:`_fit_window`), i.e. over the stretch of
    exponential growth only, wherever the data put it. A fixed window would read the plateau as
    zero growth on fast, high-dimensional systems and cut the growth short on slow ones. Where the
    curve does not grow by ``SATURATION_MARGIN`` after the first mutual-information time (nearest
    neighbours already near the attractor's size, with too few points for its dimension; or no
    exponential divergence, as in a periodic series) there is no such stretch and the estimate is
    None. Scalar (and two-channel) series are delay-embedded with the same lag to 6 coordinates,
    more than twice the dimension of a low-dimensional chaotic attractor.
    """
    from dsrecon.rosenstein import rosenstein_divergence

    n = x.shape[1]
    emb_dim = 1 if n >= 3 else math.ceil(6 / n)
    stride = max(1, min(lag // SAMPLES_PER_MI, len(x) // ROSENSTEIN_POINTS))
    xs = x[::stride][:ROSENSTEIN_POINTS]  # (T', N)
    lag_s = max(1, round(lag / stride))
    follow = max(2 * lag_s + 2, min(FOLLOW_MI_TIMES * lag_s, len(xs) // 4))
    settings = (f"emb_dim {emb_dim}, every {stride} sample(s), lag {lag_s}, {len(xs):,} points, "
                f"divergence followed {follow} steps")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            y = rosenstein_divergence(xs - xs.mean(axis=0), emb_dim=emb_dim, lag=lag_s, trajectory_len=follow)
    except ValueError as err:
        return None, f"not estimated: {err}"
    finite = np.isfinite(y)
    if not finite.all():
        return None, f"not estimated: repeated points (zero distances), {settings}"
    window = _fit_window(y, lag_s, lag_s)
    if window is None:
        return None, (f"not estimated: the divergence of neighbours does not grow by {SATURATION_MARGIN:g} e-fold "
                      "after the first mutual-information time (neighbours already near the attractor's size: too "
                      f"few points for its dimension; or no exponential divergence), {settings}")
    k = np.arange(*window)
    slope = float(np.polyfit(k, y[window[0]:window[1]], 1)[0])  # per thinned step
    return slope / (dt * stride), f"{settings}, line fitted over steps {window[0]}-{window[1] - 1} of them"


def inspect_data(x, dt: float | None = None) -> DataSummary:
    """Summarize a series before fitting it (see the module docstring).

    Parameters
    ----------
    x : array ``(T,)`` / ``(T, N)`` or Trajectory
        The series (any scale: every estimate here is scale-free per channel).
    dt : float, optional
        Sampling interval in the system's time unit. None (default) means unknown: the series is
        counted in samples (``dt = 1``) and rates are per step. A Trajectory's ``dt`` is used
        unless its ``meta["dt_known"]`` is False.

    Returns
    -------
    DataSummary
    """
    if dt is None and hasattr(x, "x") and hasattr(x, "dt") and x.meta.get("dt_known", True):
        dt = x.dt
    data = np.asarray(getattr(x, "x", x), dtype=np.float64)
    if data.ndim == 1:
        data = data[:, None]
    if data.ndim != 2 or data.shape[0] < 32 or not np.all(np.isfinite(data)):
        raise ValueError(f"inspect_data needs a finite series (T,) or (T, N) with T >= 32, got shape {data.shape}")
    if dt is not None and not (math.isfinite(dt) and dt > 0):
        raise ValueError(f"dt must be a positive number (the sampling interval), got {dt!r}")
    dt_known = dt is not None
    std = data.std(axis=0)
    z = (data - data.mean(axis=0)) / np.where(std > 0, std, 1.0)  # (T, N)
    scales = [time_scales(z[:, j]) if std[j] > 0 else (None, None) for j in range(min(z.shape[1], MAX_CHANNELS))]
    mi_time = tuple(s[0] for s in scales)
    acf_time = tuple(s[1] for s in scales)
    lag = mi_time[0] or acf_time[0]
    if lag is None:
        lam, note = None, "not estimated: no mutual-information minimum or autocorrelation time up to T // 10"
    else:
        lam, note = _lambda_max(z, lag, dt if dt_known else 1.0)
    return DataSummary(
        n_steps=int(data.shape[0]), n_dims=int(data.shape[1]), dt=float(dt) if dt_known else 1.0,
        dt_known=dt_known, time_unit="time unit" if dt_known else "step", lambda_max=lam,
        lambda_max_units="per time unit" if dt_known else "per step", lambda_max_note=note,
        mi_time=mi_time, acf_time=acf_time,
        noise=tuple(float(v) for v in noise_level(z[:, :MAX_CHANNELS])),
    )
