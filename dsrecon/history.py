"""What a training run records per epoch, shared by :func:`dsrecon.training.train` and
:func:`dsrecon.fast.ensemble_train.train_ensemble`: the validation metrics (``validate``), the epochs
that record the growth-bound diagnostic (``diag_due``) and the history as CSV (``write_history_csv``).
``config`` is a :class:`~dsrecon.training.TrainConfig`.
"""

from __future__ import annotations

import csv
import io
from importlib import import_module
from pathlib import Path

import torch

from dsrecon.checkpoint import atomic_write
from dsrecon.models.base import Model
from dsrecon.rollout import generate


def validate(model: Model, val_x: torch.Tensor, config) -> dict:
    """D_stsp and D_H of a free run against the validation series ``val_x (T, N)`` (paper protocol,
    shortened to ``config.val_steps`` points of a :class:`~dsrecon.training.TrainConfig`)."""
    try:
        metrics = import_module("dsrecon.metrics")
    except ImportError as err:  # the metrics module is developed separately; say so, do not fail
        return {"note": f"validation skipped: dsrecon.metrics not importable ({err})"}
    n = min(val_x.shape[0], config.val_steps)
    burn = n // 4
    x_gen = generate(model, val_x[0], n + burn)[burn:]  # (n, N)
    x_true = val_x[:n]  # (n, N)
    out = {}
    for key, metric in (("d_stsp", metrics.state_space_divergence), ("d_h", metrics.hellinger_distance)):
        try:  # a diverged or constant (fixed-point) generated series has no defined D_H: report NaN
            out[key] = float(metric(x_true, x_gen)) if torch.all(torch.isfinite(x_gen)) else float("nan")
        except ValueError:
            out[key] = float("nan")
    return out


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
