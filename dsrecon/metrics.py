"""Invariant-statistics metrics of a reconstruction (docs/method.md section 4): D_stsp, D_H and PE(n).

Pure functions: NumPy arrays or torch tensors in, a Python float out. Tensors are used on their
own device (CPU or CUDA); NumPy arrays go to torch's default device. All accumulations are in
float64, so the same inputs give the same numbers on every device up to float tolerance. No
plotting and no I/O here.

Symbols: ``x`` observations ``(T, N)``; ``T`` time steps; ``N`` observed dimension.

References
----------
Hess, Monfared, Brenner, Durstewitz. Generalized Teacher Forcing for Learning Chaotic Dynamics.
ICML 2023 (the evaluation protocol and the metric definitions used here).
Mikhaeil, Monfared, Durstewitz. On the difficulty of learning chaotic dynamics with RNNs.
NeurIPS 2022 (D_stsp and D_H).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from dsrecon.models.base import Model

__all__ = [
    "state_space_divergence",
    "power_spectrum",
    "hellinger_distance",
    "prediction_error",
    "is_collapsed",
]

_METHODS = ("auto", "bins", "gmm")


def _as_series(x, name: str, device=None, keep_dtype: bool = False) -> torch.Tensor:
    """``x`` as a tensor ``(T, N)`` on its own device (NumPy: default device).

    float64 by default; with ``keep_dtype`` a float input keeps its dtype (no float64 copy of a
    long series where the computation works column by column) and an integer one becomes float64."""
    if isinstance(x, torch.Tensor):
        t = x.detach().to(device=device or x.device)
    else:
        arr = np.asarray(x) if keep_dtype else np.asarray(x, dtype=np.float64)
        t = torch.as_tensor(arr, device=device or torch.get_default_device())
    if not (keep_dtype and t.is_floating_point()):
        t = t.to(torch.float64)
    if t.ndim == 1:
        t = t.unsqueeze(1)  # (T,) -> (T, 1)
    if t.ndim != 2:
        raise ValueError(f"{name} must have shape (T, N) or (T,), got {tuple(t.shape)}")
    if t.shape[0] < 2:
        raise ValueError(f"{name} needs at least 2 time steps, got T = {t.shape[0]}")
    return t


def _pair(x_true, x_gen) -> tuple[torch.Tensor, torch.Tensor]:
    xt = _as_series(x_true, "x_true")
    xg = _as_series(x_gen, "x_gen", device=xt.device)
    if xt.shape[1] != xg.shape[1]:
        raise ValueError(
            f"x_true and x_gen must have the same dimension N, got {xt.shape[1]} and {xg.shape[1]}"
        )
    return xt, xg


# ----------------------------------------------------------------------------- D_stsp
def state_space_divergence(
    x_true,
    x_gen,
    n_bins: int = 30,
    method: str = "auto",
    smoothing: float = 1e-5,
    *,
    gmm_sigma: float = 1.0,
    gmm_points: int = 10_000,
    gmm_samples: int = 1_000,
    seed: int = 0,
) -> float:
    r"""Geometric divergence D_stsp = KL(p_true || p_gen) of the two occupation measures.

    ``method="bins"`` (``"auto"`` picks it for N < 6): per dimension, ``n_bins`` equal bins over
    ``[min - 0.1 sd, max + 0.1 sd]`` of the *true* data (points outside are dropped, the upper
    edge is inclusive), Laplace smoothing ``p = (h + a) / (sum h + a n_bins^N)`` with
    ``a = smoothing``, and :math:`\sum_c p_t(c) \log(p_t(c) / p_g(c))` over all ``n_bins^N``
    cells. The sum is exact but sparse: occupied cells are summed explicitly, and the cells empty
    in both histograms all contribute the same term ``(a/Z_t) log(Z_g/Z_t)`` (``Z = sum h +
    a n_bins^N``), so they enter as a count. Memory is O(T), not O(n_bins^N)
    (30 bins in 5 dimensions are 24.3M cells).

    ``method="gmm"`` (``"auto"`` for N >= 6): each series' first ``gmm_points`` points are the
    centres of an equal-weight mixture of isotropic Gaussians of variance ``gmm_sigma**2``; the
    KL divergence is the Monte-Carlo mean of ``log p_true(s) - log p_gen(s)`` over
    ``gmm_samples`` samples ``s`` drawn from the true mixture (local generator seeded by
    ``seed``, drawn on the CPU so every device sees the same samples), with log-sum-exp in
    chunks so memory stays bounded.

    Parameters
    ----------
    x_true, x_gen : array or tensor, shape ``(T, N)`` and ``(T', N)``
        Ground-truth and generated observations in the same coordinates; lengths may differ.
    n_bins : int
        Bins per dimension (binning method).
    method : {"auto", "bins", "gmm"}
    smoothing : float
        Laplace pseudo-count ``a`` added to every cell (binning method).
    gmm_sigma, gmm_points, gmm_samples, seed
        GMM method settings (see above).

    Returns
    -------
    float
        D_stsp >= 0 (in nats; 0 for identical series). NaN if no generated point lies inside the
        true data's bin range (binning method).
    """
    if method not in _METHODS:
        raise ValueError(f"unknown method {method!r}; valid: {', '.join(_METHODS)}")
    xt, xg = _pair(x_true, x_gen)
    if method == "auto":
        method = "bins" if xt.shape[1] < 6 else "gmm"
    if method == "bins":
        if n_bins < 1:
            raise ValueError(f"n_bins must be >= 1, got {n_bins}")
        if smoothing <= 0:
            raise ValueError(f"smoothing must be > 0 (Laplace pseudo-count), got {smoothing}")
        return _kl_binned(xt, xg, n_bins, smoothing)
    if gmm_sigma <= 0 or gmm_points < 1 or gmm_samples < 1:
        raise ValueError(
            f"need gmm_sigma > 0, gmm_points >= 1, gmm_samples >= 1; got {gmm_sigma}, "
            f"{gmm_points}, {gmm_samples}"
        )
    return _kl_gmm(xt[:gmm_points], xg[:gmm_points], gmm_sigma, gmm_samples, seed)


def _cell_index(x: torch.Tensor, lo: torch.Tensor, width: torch.Tensor, n_bins: int) -> torch.Tensor:
    """Linear (int64) cell index of the points inside the grid; points outside are dropped."""
    hi = lo + width * n_bins
    inside = ((x >= lo) & (x <= hi)).all(dim=1)  # (T,)
    idx = torch.floor((x[inside] - lo) / width).long().clamp_(0, n_bins - 1)  # (T_in, N)
    strides = n_bins ** torch.arange(x.shape[1] - 1, -1, -1, device=x.device, dtype=torch.int64)
    return (idx * strides).sum(dim=1)  # (T_in,)


def _kl_binned(xt: torch.Tensor, xg: torch.Tensor, n_bins: int, a: float) -> float:
    n_dims = xt.shape[1]
    sd = xt.std(dim=0, unbiased=False)  # (N,)
    if bool((sd == 0).any()):
        raise ValueError(
            "x_true is constant in dimension(s) "
            f"{torch.nonzero(sd == 0).flatten().tolist()}: the bin edges would collapse; "
            "drop constant dimensions before computing D_stsp"
        )
    lo = xt.min(dim=0).values - 0.1 * sd  # (N,)
    width = (xt.max(dim=0).values + 0.1 * sd - lo) / n_bins  # (N,)
    ct = _cell_index(xt, lo, width, n_bins)  # (T_in,)
    cg = _cell_index(xg, lo, width, n_bins)  # (T'_in,)
    if cg.numel() == 0:
        return float("nan")
    cells, inverse = torch.unique(torch.cat([ct, cg]), return_inverse=True)  # union of occupied
    ht = torch.zeros(cells.numel(), dtype=torch.float64, device=xt.device)
    hg = torch.zeros_like(ht)
    ht.index_add_(0, inverse[: ct.numel()], torch.ones(ct.numel(), dtype=torch.float64, device=xt.device))
    hg.index_add_(0, inverse[ct.numel():], torch.ones(cg.numel(), dtype=torch.float64, device=xt.device))
    n_cells = float(n_bins) ** n_dims
    z_t = ct.numel() + a * n_cells
    z_g = cg.numel() + a * n_cells
    pt = (ht + a) / z_t  # (C,) over cells occupied by either series
    pg = (hg + a) / z_g
    occupied = (pt * (torch.log(pt) - torch.log(pg))).sum().item()
    # every cell empty in both has p_t = a / Z_t and p_g = a / Z_g
    n_empty = n_cells - cells.numel()
    empty = n_empty * (a / z_t) * math.log(z_g / z_t)
    return float(occupied + empty)


def _log_mixture(s: torch.Tensor, centres: torch.Tensor, sigma: float, chunk: int) -> torch.Tensor:
    """log of the equal-weight isotropic Gaussian mixture at ``s``, up to the shared constant
    ``-N/2 log(2 pi sigma^2)``; chunked over centres so at most ``len(s) * chunk`` distances live."""
    parts = []
    for start in range(0, centres.shape[0], chunk):
        d2 = torch.cdist(s, centres[start:start + chunk], compute_mode="donot_use_mm_for_euclid_dist") ** 2
        parts.append(torch.logsumexp(-d2 / (2 * sigma**2), dim=1, keepdim=True))  # (S, 1)
    return torch.logsumexp(torch.cat(parts, dim=1), dim=1) - math.log(centres.shape[0])  # (S,)


def _kl_gmm(xt: torch.Tensor, xg: torch.Tensor, sigma: float, n_samples: int, seed: int) -> float:
    gen = torch.Generator(device="cpu").manual_seed(seed)
    comp = torch.randint(0, xt.shape[0], (n_samples,), generator=gen)  # (S,)
    noise = torch.randn(n_samples, xt.shape[1], generator=gen, dtype=torch.float64)  # (S, N)
    s = xt[comp.to(xt.device)] + sigma * noise.to(xt.device)  # (S, N) samples of p_true
    chunk = 2048
    log_pt = _log_mixture(s, xt, sigma, chunk)  # (S,)
    log_pg = _log_mixture(s, xg, sigma, chunk)  # (S,)
    return float((log_pt - log_pg).mean().item())


# ----------------------------------------------------------------------------- D_H
# D_H is computed one observed dimension at a time, in float64 for that column only, and the
# smoothing is a sum of 2r + 1 shifted copies instead of conv1d, whose CPU path unfolds the
# spectrum into a (2r + 1) x F matrix (161 x 1M doubles for a 2M-step series). Peak memory beyond
# the inputs is a few float64 vectors of length T, not a multiple of the whole series.
def _gaussian_weights(sigma: float, device) -> torch.Tensor:
    """Normalized Gaussian kernel ``(2r + 1,)``, radius ``r = int(4 sigma + 0.5)`` (scipy's default)."""
    radius = int(4 * sigma + 0.5)
    k = torch.arange(-radius, radius + 1, device=device, dtype=torch.float64)
    w = torch.exp(-0.5 * (k / sigma) ** 2)
    return w / w.sum()  # (2r+1,)


def _smooth_column(p: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian smoothing of one spectrum ``(F,)``, radius ``int(4 sigma + 0.5)``, with half-sample
    symmetric ('reflect') padding ``d c b a | a b c d | d c b a`` (the convention of
    ``scipy.ndimage.gaussian_filter1d``): ``out[i] = sum_k w[k] padded[i + k]``."""
    radius = int(4 * sigma + 0.5)
    if radius == 0:
        return p
    n_freq = p.shape[0]
    if n_freq <= radius:
        raise ValueError(
            f"the spectrum has {n_freq} frequency bins, fewer than the smoothing radius "
            f"{radius} (= 4 sigma): use a longer series (T >= {2 * radius + 2}) or a smaller sigma"
        )
    w = _gaussian_weights(sigma, p.device).tolist()  # 2r + 1 Python floats: one scalar multiply-add each
    padded = torch.cat([p[:radius].flip(0), p, p[-radius:].flip(0)])  # (F + 2r,)
    out = torch.zeros_like(p)  # (F,)
    for k, wk in enumerate(w):
        out.add_(padded[k : k + n_freq], alpha=wk)
    return out


def _gaussian_smooth(p: torch.Tensor, sigma: float) -> torch.Tensor:
    """:func:`_smooth_column` applied to each column of ``(F, N)``."""
    return torch.stack([_smooth_column(p[:, j], sigma) for j in range(p.shape[1])], dim=1)  # (F, N)


def _column_spectrum(x: torch.Tensor, sigma: float) -> torch.Tensor | None:
    """Smoothed, normalized power spectrum ``(T // 2 + 1,)`` of one series ``(T,)`` (any float dtype,
    computed in float64); None if the series is constant."""
    x = x.to(torch.float64)  # (T,), a copy of this column only
    sd = x.std(unbiased=False)
    if bool(sd == 0):
        return None
    z = (x - x.mean()) / sd  # (T,)
    del x
    p = torch.fft.rfft(z).abs() ** 2  # (F,)
    del z
    p = _smooth_column(p, sigma).clamp_(min=0)
    return p / p.sum()


def power_spectrum(x, sigma: float = 20) -> torch.Tensor:
    """Smoothed, normalized power spectrum of each dimension (docs/method.md section 4, D_H).

    Per dimension: z-score the whole series (population sd), ``|rfft|^2``, Gaussian smoothing
    with standard deviation ``sigma`` frequency bins (kernel radius 4 sigma, reflect padding as in
    ``scipy.ndimage.gaussian_filter1d``), clip negatives, normalize to sum 1. No cutoff.

    Parameters
    ----------
    x : array or tensor, shape ``(T, N)`` or ``(T,)``
    sigma : float
        Smoothing width in frequency bins (0: no smoothing).

    Returns
    -------
    torch.Tensor, shape ``(T // 2 + 1, N)``, float64, on the input's device; each column sums to 1.
    """
    x = _as_series(x, "x", keep_dtype=True)
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    columns = []
    for j in range(x.shape[1]):
        p = _column_spectrum(x[:, j], sigma)
        if p is None:
            raise ValueError("x is constant in some dimension; its power spectrum is undefined")
        columns.append(p)
    return torch.stack(columns, dim=1)  # (F, N)


def hellinger_distance(x_true, x_gen, sigma: float = 20) -> float:
    """D_H: Hellinger distance of the smoothed power spectra, mean over dimensions.

    ``H = sqrt(1 - sum_f sqrt(p_f q_f))`` per dimension with ``p, q`` from
    :func:`power_spectrum`; 0 for identical spectra, 1 for disjoint ones, symmetric. The
    dimensions are processed one at a time, so the memory needed beyond the inputs is a few
    float64 vectors of length T (the inputs are not copied to float64 as a whole).

    Parameters
    ----------
    x_true, x_gen : array or tensor, shape ``(T, N)``
        Series of the same length T, so that frequency bins coincide. Different lengths raise a
        ``ValueError`` (no silent truncation); pass ``x_gen[:len(x_true)]`` or generate T steps.
    sigma : float
        Smoothing width in frequency bins.

    Returns
    -------
    float in [0, 1]; NaN if either series is constant in some dimension (its normalized
    spectrum is 0/0), e.g. a model that collapsed to a fixed point.
    """
    xt = _as_series(x_true, "x_true", keep_dtype=True)
    xg = _as_series(x_gen, "x_gen", device=xt.device, keep_dtype=True)
    if xt.shape[1] != xg.shape[1]:
        raise ValueError(
            f"x_true and x_gen must have the same dimension N, got {xt.shape[1]} and {xg.shape[1]}"
        )
    if xt.shape[0] != xg.shape[0]:
        raise ValueError(
            f"x_true and x_gen must have the same length for D_H (frequency bins must match), got "
            f"T = {xt.shape[0]} and {xg.shape[0]}; truncate to the shorter one, e.g. x_gen[:{xt.shape[0]}]"
        )
    for x in (xt, xg):  # a constant dimension (e.g. a model stuck at a fixed point) has no spectrum
        if any(bool(x[:, j].to(torch.float64).std(unbiased=False) == 0) for j in range(x.shape[1])):
            return float("nan")
    bc = []
    for j in range(xt.shape[1]):
        p, q = _column_spectrum(xt[:, j], sigma), _column_spectrum(xg[:, j], sigma)  # (F,) each
        bc.append(torch.sqrt(p * q).sum())  # Bhattacharyya coefficient of dimension j
        del p, q
    bc = torch.stack(bc)  # (N,)
    return float(torch.sqrt((1 - bc).clamp(min=0)).mean().item())


# ----------------------------------------------------------------------------- PE(n)
@torch.no_grad()
def prediction_error(model: Model, x, n: int = 20, *, batch: int = 20_000) -> float:
    """PE(n): mean squared n-step-ahead prediction error from data-inferred states.

    From every start ``t = 0 .. T-n-1`` the state ``initial_state(x_t)`` is iterated ``n`` steps
    freely and ``observe`` is compared with ``x_{t+n}``; the mean is over all starts and
    dimensions. All starts run as one batch, split into chunks of ``batch`` starts for memory.

    Parameters
    ----------
    model : Model
    x : array or tensor, shape ``(T, N)``
        Observations in the model's coordinates.
    n : int
        Prediction horizon in steps (paper: 20).
    batch : int
        Starts per chunk.

    Returns
    -------
    float
        PE(n) in squared observation units (0 for a perfect model on noise-free data).
    """
    x = _as_series(x, "x")
    if n < 1 or x.shape[0] <= n:
        raise ValueError(f"need n >= 1 and T > n, got n = {n}, T = {x.shape[0]}")
    if x.shape[1] != model.obs_dim:
        raise ValueError(f"x has N = {x.shape[1]} dimensions, the model observes {model.obs_dim}")
    x = x.to(device=model._device(), dtype=model._dtype())
    n_starts = x.shape[0] - n
    total = torch.zeros((), dtype=torch.float64, device=x.device)
    for start in range(0, n_starts, batch):
        stop = min(start + batch, n_starts)
        z = model.initial_state(x[start:stop])  # (B, M)
        for _ in range(n):
            z = model.step(z)
        err = model.observe(z) - x[start + n:stop + n]  # (B, N)
        total += (err.double() ** 2).sum()
    return float(total.item() / (n_starts * x.shape[1]))


COLLAPSE_RATIO = 0.25  # std below a quarter of the data's in most dimensions: a fixed point or a small orbit


def is_collapsed(std_ratio) -> bool:
    """Whether a generated orbit collapsed: ``std_ratio < 0.25`` in more than half the dimensions.

    ``std_ratio`` holds, per observed dimension, the std of the generated series over the data's
    (:attr:`Report.std_ratio`). A fixed point gives ratios of 0; the small orbits that a
    reconstruction of a heartbeat or a chaotic attractor can fall onto instead give a few per cent
    to ~15 % (0.02-0.15 on the GTF paper's ECG, D_stsp 7-17 against ~1-5 for the heartbeat cycle),
    and such an orbit may keep one or two dimensions larger, while the reconstructions that hold
    the attractor give 0.5-1.2 (``benchmarks/results/ecg_gtf_2026-12-07_analysis.md``). An orbit of
    a quarter of the data's extent in most dimensions does not reproduce the data's attractor in any
    case. A non-finite ratio (a diverged orbit) is not a collapse. An orbit of the data's size in
    the wrong place is not caught here: D_stsp shows it.
    """
    if not std_ratio:
        return False
    r = [v for v in std_ratio if v is not None and math.isfinite(v)]
    return len(r) == len(std_ratio) and 2 * sum(v < COLLAPSE_RATIO for v in r) > len(r)
