"""matplotlib for the figure functions (:mod:`dsrecon.plotting`, :mod:`dsrecon.analysis.figures`).

matplotlib is an optional extra (``pip install dsrecon[plot]``), imported only when a figure is
drawn, with the non-interactive Agg backend so that figures work on headless machines.
"""

from __future__ import annotations

from pathlib import Path


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend; ImportError naming the extra when matplotlib is missing."""
    try:
        import matplotlib
    except ImportError as err:
        raise ImportError("plotting needs matplotlib: pip install dsrecon[plot]") from err
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path) -> Path:
    """Write ``fig`` to ``path`` (format from the suffix; parent folders created), close it, return the path."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


__all__ = ["pyplot", "save_figure"]
