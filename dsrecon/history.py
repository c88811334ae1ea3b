"""What a training run records per epoch, shared by :func:`dsrecon.training.train` and
:func:`dsrecon.member_training.train_members`: the validation metrics (``validate``), the epochs
that record the growth-bound diagnostic (``diag_due``) and the history as CSV (``write_history_csv``).
``config`` is a :class:`~dsrecon.training.TrainConfig`.
"""

from __future__ import annotations

import csv
import io
import math
from importlib import import_module
from pathlib import Path

import numpy as np
import torch

from dsrecon.checkpoint import atomic_write
from dsrecon.models.base import Model
from dsrecon.rollout import generate


def validate(model: Model, val_x: torch.Tensor, config) -> dict:
    """D_stsp and D_H of free runs against the validation series ``val_x (T, N)`` (paper protocol,
    shortened to ``config.val_steps`` points of a :class:`~dsrecon.training.TrainConfig`).

    One run from the first validation point (``config.val_starts == 1``), or the means over
    ``config.val_starts`` runs from points spread evenly over the series, with ``val_collapsed``,
    the number of runs that collapsed (:func:`dsrecon.metrics.is_collapsed`); a run whose output is
    constant has no D_H and counts its largest value, 1, in the mean (see ``TrainConfig.val_starts``).
    """
    try:
        metrics = import_module("dsrecon.metrics")
    except ImportError as err:  # the metrics module is developed separately; say so, do not fail
        return {"note": f"validation skipped: dsrecon.metrics not importable ({err})"}
    n = min(val_x.shape[0], config.val_steps)
    burn = n // 4
    x_true = val_x[:n]  # (n, N)
    starts = torch.linspace(0, val_x.shape[0] - 1, config.val_starts).round().long()  # (S,)
    x_gen = generate(model, val_x[starts], n + burn)[:, burn:]  # (S, n, N)
    runs = []
    for x in x_gen:
        run = {}
        for key, metric in (("d_stsp", metrics.state_space_divergence), ("d_h", metrics.hellinger_distance)):
            try:  # a diverged or constant (fixed-point) generated series has no defined D_H: NaN
                run[key] = float(metric(x_true, x)) if torch.all(torch.isfinite(x)) else float("nan")
            except ValueError:
                run[key] = float("nan")
        run["collapsed"] = metrics.is_collapsed((x.std(dim=0) / x_true.std(dim=0)).tolist())
        run["constant"] = bool(torch.all(x == x[-1]))
        runs.append(run)
    if config.val_starts == 1:
        return {"d_stsp": runs[0]["d_stsp"], "d_h": runs[0]["d_h"]}
    d_h = [1.0 if r["constant"] and math.isnan(r["d_h"]) else r["d_h"] for r in runs]
    return {"d_stsp": float(np.mean([r["d_stsp"] for r in runs])), "d_h": float(np.mean(d_h)),
            "val_collapsed": sum(r["collapsed"] for r in runs)}


def write_history_csv(path: Path, history: list) -> None:
    """The per-epoch records as CSV (one column per key seen in any record, blank where absent), atomically."""
    keys = list(dict.fromkeys(k for r in history for k in r))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, restval="")
    writer.writeheader()
    writer.writerows(history)
    atomic_write(path, lambda f: f.write(buf.getvalue().encode()))


def diag_due(epoch: int, config) -> bool:
    """Whether the epoch records the growth-bound diagnostic G (every ``config.diag_every`` and the last)."""
    return epoch % config.diag_every == 0 or epoch == config.epochs


__all__ = ["diag_due", "validate", "write_history_csv"]
