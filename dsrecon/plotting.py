"""Figures for a reconstruction: attractors, power spectra, Lyapunov convergence, training curves.

matplotlib is an optional extra (``pip install dsrecon[plot]``); it is imported inside each
function with the non-interactive Agg backend, so importing dsrecon never needs it and plots
work on headless machines. Every function writes one PNG (or any format matplotlib infers from
the suffix) and returns its path.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from dsrecon.figure_files import pyplot, save_figure

__all__ = [
    "plot_attractor",
    "plot_spectra",
    "plot_lyapunov_convergence",
    "plot_training_curves",
    "plot_report",
]

_TRUE, _GEN = "#1f4e79", "#d95f02"  # data: dark blue, model: orange


def _np(x, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(f"{name} must have shape (T, N), got {x.shape}")
    return x


def plot_attractor(x_true, x_gen, path, *, max_points: int = 20_000, labels=("data", "model")) -> Path:
    """Data and generated attractor: a 3-D view of each plus the 2-D projections overlaid.

    Parameters
    ----------
    x_true, x_gen : array or tensor, shape ``(T, N)``
        For N > 3 the first three coordinates are shown; for N = 2 only the projection; N = 1 is
        shown as a time series.
    path : str or Path
    max_points : int
        The first ``max_points`` points of each series are drawn (lines stay readable).
    """
    plt = pyplot()
    xt, xg = _np(x_true, "x_true")[:max_points], _np(x_gen, "x_gen")[:max_points]
    n = min(xt.shape[1], xg.shape[1], 3)
    names = [f"$x_{i + 1}$" for i in range(n)]
    if n == 1:
        fig, ax = plt.subplots(figsize=(10, 3))
        ax.plot(xt[:, 0], color=_TRUE, lw=0.6, label=labels[0])
        ax.plot(xg[:, 0], color=_GEN, lw=0.6, alpha=0.8, label=labels[1])
        ax.set_xlabel("step")
        ax.set_ylabel(names[0])
        ax.legend(loc="upper right")
        return save_figure(fig, path)
    # shared limits (finite points of both series) so a collapsed or offset model is seen as such
    both = np.concatenate([xt[:, :n], xg[:, :n]])
    both = both[np.all(np.isfinite(both), axis=1)]
    lo, hi = both.min(axis=0), both.max(axis=0)
    pad = 0.05 * np.maximum(hi - lo, 1e-9)
    limits = list(zip(lo - pad, hi + pad))
    # a model at a fixed point draws a zero-length line: mark its point instead
    finite_g = xg[:, :n][np.all(np.isfinite(xg[:, :n]), axis=1)]
    collapsed = len(finite_g) > 0 and np.ptp(finite_g, axis=0).max() < 1e-3 * np.ptp(xt[:, :n], axis=0).max()
    pairs = [(0, 1)] if n == 2 else [(0, 1), (0, 2), (1, 2)]
    ncols = len(pairs) + (2 if n == 3 else 0)
    fig = plt.figure(figsize=(3.6 * ncols, 3.6))
    col = 1
    if n == 3:
        for data, color, title in ((xt, _TRUE, labels[0]), (xg, _GEN, labels[1])):
            ax = fig.add_subplot(1, ncols, col, projection="3d")
            ax.plot(data[:, 0], data[:, 1], data[:, 2], color=color, lw=0.3)
            if data is xg and collapsed:
                ax.scatter(*finite_g[-1, :3], color=color, s=25)
            ax.set_xlim(*limits[0])
            ax.set_ylim(*limits[1])
            ax.set_zlim(*limits[2])
            ax.set_title(title)
            ax.set_xlabel(names[0], labelpad=-8)
            ax.set_ylabel(names[1], labelpad=-8)
            ax.set_zlabel(names[2], labelpad=-8)
            ax.tick_params(labelsize=6, pad=-3)
            col += 1
    for i, j in pairs:
        ax = fig.add_subplot(1, ncols, col)
        ax.plot(xt[:, i], xt[:, j], color=_TRUE, lw=0.3, label=labels[0])
        ax.plot(xg[:, i], xg[:, j], color=_GEN, lw=0.3, alpha=0.7, label=labels[1])
        if collapsed:
            ax.plot(finite_g[-1, i], finite_g[-1, j], "o", color=_GEN, ms=5)
        ax.set_xlim(*limits[i])
        ax.set_ylim(*limits[j])
        ax.set_xlabel(names[i])
        ax.set_ylabel(names[j])
        col += 1
    handles = [plt.Line2D([], [], color=c, lw=1.5) for c in (_TRUE, _GEN)]
    fig.legend(handles, labels, loc="upper center", ncol=2, frameon=False, bbox_to_anchor=(0.5, 1.06))
    fig.tight_layout()
    return save_figure(fig, path)


def plot_spectra(x_true, x_gen, path, sigma: float = 20, *, dt: float | None = None,
                 max_dims: int = 6) -> Path:
    """Smoothed power spectra (as used by D_H) of data and model, one panel per dimension.

    Frequencies are in cycles per time unit when ``dt`` is given, else cycles per step; the
    y-axis is logarithmic; each panel's title gives that dimension's Hellinger distance.
    """
    from dsrecon.metrics import power_spectrum

    plt = pyplot()
    xt, xg = _np(x_true, "x_true"), _np(x_gen, "x_gen")
    n = min(xt.shape[1], xg.shape[1], max_dims)
    fig, axes = plt.subplots(1, n, figsize=(3.8 * n, 3.2), squeeze=False)
    for d, ax in enumerate(axes[0]):
        p = power_spectrum(xt[:, d], sigma).cpu().numpy()[:, 0]  # (F,)
        ft = np.fft.rfftfreq(xt.shape[0], d=dt or 1.0)
        fg = np.fft.rfftfreq(xg.shape[0], d=dt or 1.0)
        ax.semilogy(ft, p, color=_TRUE, lw=1.2, label="data")
        if np.ptp(xg[:, d]) > 0 and np.all(np.isfinite(xg[:, d])):
            q = power_spectrum(xg[:, d], sigma).cpu().numpy()[:, 0]
            ax.semilogy(fg, q, color=_GEN, lw=1.2, ls="--", label="model")
            title = f"$x_{d + 1}$"
            if p.shape[0] == q.shape[0]:
                title += f"   $D_H$ = {math.sqrt(max(0.0, 1 - float(np.sum(np.sqrt(p * q))))):.3f}"
        else:  # a model stuck at a fixed point (or diverged) has no spectrum to draw
            title = f"$x_{d + 1}$   model: constant or not finite"
        ax.set_title(title, fontsize=10)
        # show the band holding 99.9% of the data's power, not the empty high-frequency tail
        f_max = ft[min(np.searchsorted(np.cumsum(p), 0.999) + 1, len(ft) - 1)]
        ax.set_xlim(0, max(f_max, ft[1] * 10))
        floor = max(p[ft <= f_max].min(), 1e-12)
        ax.set_ylim(bottom=floor / 3)
        ax.set_xlabel("frequency" + (" (1 / time unit)" if dt else " (1 / step)"))
    axes[0][0].set_ylabel("normalized power")
    axes[0][0].legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_lyapunov_convergence(result, path) -> Path:
    """Running Lyapunov exponents against time (from a ``LyapunovResult``): all exponents on the
    left, the leading ones (those not far below lambda_1, at least two) zoomed on the right."""
    plt = pyplot()
    scale = 1 / result.dt if result.dt else 1.0
    hist = np.asarray(result.history) * scale  # (R, M)
    xs = np.asarray(result.history_steps) * (result.dt or 1)  # (R,)
    unit = "per time unit" if result.dt else "per step"
    final = hist[-1]
    m = hist.shape[1]
    colors = plt.cm.viridis(np.linspace(0, 0.85, max(m, 2)))
    spread = max(abs(final[0]), 1e-3)
    lead = [i for i in range(m) if final[i] >= final[0] - 3 * spread][: max(2, min(m, 4))]
    lead = lead if len(lead) >= min(2, m) else list(range(min(2, m)))
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for ax, idx, title in ((axes[0], range(m), "all exponents"), (axes[1], lead, "leading exponents")):
        for i in idx:
            ax.plot(xs, hist[:, i], color=colors[i], lw=1.3, label=f"$\\lambda_{{{i + 1}}}$ = {final[i]:.4g}")
        ax.axhline(0, color="0.5", lw=0.6, ls=":")
        ax.set_xscale("log")
        ax.set_xlabel("time units" if result.dt else "steps")
        ax.set_title(title, fontsize=10)
    lo, hi = final[lead].min(), final[lead].max()
    pad = max(0.5 * (hi - lo), 0.5 * spread, 0.02)
    axes[1].set_ylim(lo - pad, hi + pad)
    axes[0].set_ylabel(f"exponent ({unit})")
    axes[0].legend(loc="lower right", fontsize=8, ncol=1 if m <= 6 else 2)
    axes[1].legend(loc="lower right", fontsize=8)
    fig.suptitle(f"Lyapunov spectrum (QR, {result.per_initial.shape[0]} initial conditions, "
                 f"{result.n_steps:,} steps), $D_{{KY}}$ = {result.kaplan_yorke:.3f}", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


_CURVES = (  # key, label, log-scale
    ("loss", "training loss", True),
    ("alpha", "forcing strength alpha", False),
    ("grad_norm", "gradient norm", True),
    ("G", "Jacobian growth bound G", False),
    ("lr", "learning rate", True),
    ("d_stsp", "$D_{stsp}$ (validation)", False),
    ("d_h", "$D_H$ (validation)", False),
)


def plot_training_curves(history, path) -> Path:
    """One panel per quantity present in the per-epoch history (loss, alpha, grad_norm, G, lr,
    d_stsp, d_h); entries missing or None in some epochs (e.g. validation every k epochs) are
    skipped."""
    plt = pyplot()
    if not history:
        raise ValueError("history is empty: nothing to plot")
    epochs_all = [h.get("epoch", i + 1) for i, h in enumerate(history)]
    present = []
    for key, label, log in _CURVES:
        pts = [(e, h[key]) for e, h in zip(epochs_all, history)
               if h.get(key) is not None and np.isfinite(h[key])]
        if pts:
            present.append((key, label, log, np.asarray(pts, dtype=float)))
    if not present:
        raise ValueError(f"history has none of the keys {[k for k, _, _ in _CURVES]}")
    ncols = min(3, len(present))
    nrows = math.ceil(len(present) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3 * nrows), squeeze=False)
    for ax, (key, label, log, pts) in zip(axes.flat, present):
        marker = "o" if len(pts) < 30 else None
        ax.plot(pts[:, 0], pts[:, 1], color=_TRUE, lw=1.2, marker=marker, ms=3)
        if log and np.all(pts[:, 1] > 0):
            ax.set_yscale("log")
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("epoch")
    for ax in list(axes.flat)[len(present):]:
        ax.axis("off")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_report(report, x_true, path) -> Path:
    """Summary figure of a :class:`~dsrecon.evaluation.Report`: first two coordinates of data and
    model, the first dimension's spectra, and the scores as text. Needs ``report.generated``."""
    from dsrecon.metrics import power_spectrum

    if report.generated is None:
        raise ValueError("report.generated is None (a loaded report has no generated series); "
                         "use the Report returned by evaluate()")
    plt = pyplot()
    xt, xg = _np(x_true, "x_true"), _np(report.generated, "report.generated")
    fig, axes = plt.subplots(1, 3, figsize=(16, 4), gridspec_kw={"width_ratios": [1, 1.2, 1.5]})
    j = 1 if xt.shape[1] > 1 else 0
    axes[0].plot(xt[:20_000, 0], xt[:20_000, j], color=_TRUE, lw=0.3, label="data")
    axes[0].plot(xg[:20_000, 0], xg[:20_000, j], color=_GEN, lw=0.3, alpha=0.7, label="model")
    axes[0].set_xlabel("$x_1$")
    axes[0].set_ylabel(f"$x_{j + 1}$")
    handles = [plt.Line2D([], [], color=c, lw=1.5) for c in (_TRUE, _GEN)]
    axes[0].legend(handles, ["data", "model"], loc="upper left", fontsize=8)
    p = power_spectrum(xt[:, :1]).numpy()[:, 0]
    f = np.fft.rfftfreq(xt.shape[0], d=report.dt or 1.0)
    f_max = f[min(np.searchsorted(np.cumsum(p), 0.999) + 1, len(f) - 1)]
    axes[1].semilogy(f, p, color=_TRUE, label="data")
    if np.ptp(xg[:, 0]) > 0 and np.all(np.isfinite(xg[:, 0])):
        q = power_spectrum(xg[:, :1]).numpy()[:, 0]
        axes[1].semilogy(np.fft.rfftfreq(xg.shape[0], d=report.dt or 1.0), q, color=_GEN, ls="--", label="model")
    axes[1].set_xlim(0, f_max)
    axes[1].set_ylim(bottom=max(p[f <= f_max].min(), 1e-12) / 3)
    axes[1].set_xlabel("frequency")
    axes[1].set_title("power spectrum of $x_1$", fontsize=10)
    axes[2].axis("off")
    text = str(report).replace(" on ", "\n  on ", 1)  # the long first line in two
    axes[2].text(0.0, 0.95, text, va="top", ha="left", family="monospace", fontsize=8,
                 transform=axes[2].transAxes)
    fig.tight_layout()
    return save_figure(fig, path)
