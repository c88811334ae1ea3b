"""Figures of the analysis: fixed points and cycles on the attractor, basin maps, bifurcation sweeps.

Same conventions as :mod:`dsrecon.plotting`: matplotlib (``pip install dsrecon[plot]``) is imported
inside each function with the Agg backend, every function writes one file and returns its path.
Markers: stable points filled, saddles half-filled, unstable ones open; cycles joined by a thin line.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dsrecon.figure_files import pyplot, save_figure

__all__ = ["plot_cycles", "plot_basins", "plot_bifurcation"]

_TRUE, _GEN = "#1f4e79", "#d95f02"  # data and model colours of dsrecon.plotting
_STABILITY_STYLE = {  # fill style, colour
    "stable": ("full", "#1a9850"),
    "saddle": ("left", "#d73027"),
    "unstable": ("none", "#d73027"),
    "non-hyperbolic": ("none", "0.3"),
}


def _mark(ax, cycle, i: int, j: int, label: bool):
    fill, color = _STABILITY_STYLE[cycle.stability]
    pts = cycle.data
    if cycle.period > 1:
        loop = np.vstack([pts, pts[:1]])
        ax.plot(loop[:, i], loop[:, j], color=color, lw=0.8, alpha=0.8)
    ax.plot(pts[:, i], pts[:, j], ls="none", marker="o" if cycle.period == 1 else "s", ms=8 if cycle.period == 1 else 5,
            fillstyle=fill, color=color, markeredgecolor="k", mew=0.8,
            label=(f"{'fixed point' if cycle.period == 1 else f'{cycle.period}-cycle'}: {cycle.kind}"
                   if label else None))


def plot_cycles(x_data, cycles, path, *, x_model=None, reference=None, reference_label: str = "reference",
                max_points: int = 20_000, names=None) -> Path:
    """Fixed points and cycles drawn on the attractor, in data units: the 2-d projections of
    ``x_data`` (and ``x_model``, the model's generated series) with each cycle's points marked.

    Parameters
    ----------
    x_data : array, shape ``(T, N)``
        The data in its original units (or the units the cycles' ``data`` are in).
    cycles : list of Cycle
    path : str or Path
    x_model : array, shape ``(T', N)``, optional
        The model's orbit in the same units.
    reference : array, shape ``(R, N)``, optional
        Known points to compare with (e.g. the true system's fixed points), drawn as black crosses
        and named ``reference_label`` in the legend.
    names : list of str, optional
        Axis names (default ``x_1 .. x_N``).
    """
    plt = pyplot()
    xd = np.asarray(x_data, dtype=np.float64)
    if xd.ndim != 2:
        raise ValueError(f"x_data must have shape (T, N), got {xd.shape}")
    N = xd.shape[1]
    names = list(names) if names else [f"$x_{{{i + 1}}}$" for i in range(N)]
    pairs = [(0, 0)] if N == 1 else [(0, 1)] if N == 2 else [(0, 1), (0, 2), (1, 2)]
    fig, axes = plt.subplots(1, len(pairs), figsize=(4.4 * len(pairs), 4.2), squeeze=False)
    for k, (i, j) in enumerate(pairs):
        ax = axes[0, k]
        if N == 1:
            ax.plot(xd[:max_points, 0], color=_TRUE, lw=0.4)
        else:
            ax.plot(xd[:max_points, i], xd[:max_points, j], color=_TRUE, lw=0.25, alpha=0.6, label="data")
            if x_model is not None:
                xm = np.asarray(x_model, dtype=np.float64)[:max_points]
                ax.plot(xm[:, i], xm[:, j], color=_GEN, lw=0.25, alpha=0.5, label="model")
        seen = set()
        for c in cycles:
            key = (c.period, c.kind)
            if N == 1:
                fill, color = _STABILITY_STYLE[c.stability]
                for y in c.data[:, 0]:
                    ax.axhline(y, color=color, lw=0.8, ls="--")
            else:
                _mark(ax, c, i, j, label=k == 0 and key not in seen)
            seen.add(key)
        if reference is not None and N > 1:
            ref = np.asarray(reference, dtype=np.float64).reshape(-1, N)
            ax.plot(ref[:, i], ref[:, j], ls="none", marker="+", ms=11, mew=1.6, color="k",
                    label=reference_label if k == 0 else None)
        ax.set_xlabel(names[i] if N > 1 else "step")
        ax.set_ylabel(names[j])
    if N > 1:
        axes[0, 0].legend(loc="best", fontsize=7, framealpha=0.8)
    fig.suptitle(f"{sum(c.period == 1 for c in cycles)} fixed point(s), "
                 f"{sum(c.period > 1 for c in cycles)} cycle(s)", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_basins(basins, path, *, cycles=None) -> Path:
    """A basin map (:class:`~dsrecon.analysis.basins.BasinMap`): one colour per attractor, diverged
    initial conditions in white; fixed points and cycles (latent coordinates projected on the
    slice) marked when given."""
    plt = pyplot()
    from matplotlib.colors import ListedColormap

    labels = basins.labels
    attractors = basins.report.attractors
    n = max(len(attractors), 1)
    palette = plt.cm.tab10(np.arange(n) % 10)
    cmap = ListedColormap(np.vstack([[1, 1, 1, 1], palette]))
    fig, ax = plt.subplots(figsize=(5.6, 4.8))
    ax.imshow(labels + 1, origin="lower", cmap=cmap, vmin=-0.5, vmax=n + 0.5, interpolation="nearest",
              extent=(basins.a[0], basins.a[-1], basins.b[0], basins.b[-1]), aspect="auto")
    handles = [plt.Rectangle((0, 0), 1, 1, color=palette[i]) for i in range(len(attractors))]
    names = [f"{a.kind}" + (f" (period {a.period})" if a.kind == "cycle" else "") +
             f": {a.n_initial / labels.size:.0%}" for a in attractors]
    if basins.report.n_divergent:
        handles.append(plt.Rectangle((0, 0), 1, 1, facecolor="white", edgecolor="0.5"))
        names.append(f"diverged: {basins.report.n_divergent / labels.size:.0%}")
    u = basins.u / np.dot(basins.u, basins.u)
    v = basins.v / np.dot(basins.v, basins.v)
    for c in cycles or []:
        offsets = c.latent - basins.center  # (k, M)
        fill, color = _STABILITY_STYLE[c.stability]
        ax.plot(offsets @ u, offsets @ v, ls="none", marker="o" if c.period == 1 else "s", ms=7, fillstyle=fill,
                color=color, markeredgecolor="k")
    ax.set_xlim(basins.a[0], basins.a[-1])
    ax.set_ylim(basins.b[0], basins.b[-1])
    ax.set_xlabel(basins.axis_names[0])
    ax.set_ylabel(basins.axis_names[1])
    ax.legend(handles, names, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, fontsize=8, frameon=False)
    ax.set_title("basins of attraction", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_bifurcation(sweep, path, *, coordinate: int = 0, name=None) -> Path:
    """A bifurcation sweep (:class:`~dsrecon.analysis.bifurcation.BifurcationSweep`): the orbit's
    points and the fixed points and cycles (observed coordinate ``coordinate``, data units) above,
    lambda_max below (per time unit when the sweep has ``dt``)."""
    plt = pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7.5, 6), sharex=True, gridspec_kw={"height_ratios": [2.2, 1]})
    v = sweep.values
    orbit = sweep.orbit[:, :, coordinate]  # (V, n_orbit)
    top.plot(np.repeat(v, orbit.shape[1]), orbit.ravel(), ",", color="0.35", alpha=0.6)
    seen = set()
    for value, cycles in zip(v, sweep.cycles):
        for c in cycles:
            fill, color = _STABILITY_STYLE[c.stability]
            key = (c.period == 1, c.stability)
            top.plot(np.full(c.period, value), c.data[:, coordinate], ls="none",
                     marker="o" if c.period == 1 else "s", ms=4, fillstyle=fill, color=color, markeredgecolor=color,
                     label=(f"{'fixed point' if c.period == 1 else 'cycle'}, {c.stability}" if key not in seen else None))
            seen.add(key)
    top.set_ylabel(name or f"$x_{{{coordinate + 1}}}$")
    top.legend(loc="best", fontsize=7)
    top.set_title(f"bifurcation sweep over {sweep.parameter}", fontsize=10)
    scale, unit = (1 / sweep.dt, "per time unit") if sweep.dt else (1.0, "per step")
    bottom.plot(v, sweep.lambda_max * scale, color=_TRUE, marker="o", ms=3)
    bottom.axhline(0, color="0.5", lw=0.6, ls=":")
    bottom.set_ylabel(f"$\\lambda_{{max}}$ ({unit})")
    bottom.set_xlabel(sweep.parameter)
    fig.tight_layout()
    return save_figure(fig, path)
