"""What the one-model loop (:func:`dsrecon.training.train`) and the member-axis loop
(:func:`dsrecon.member_training.train_members`) share: the series as tensors, the learning-rate
schedule, the compute settings held while training, the progress bar and the per-epoch record with
its validation. ``config`` is a :class:`~dsrecon.train_config.TrainConfig`.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from dsrecon.data import as_series
from dsrecon.history import validate
from dsrecon.selection import BestByValidation


def series_tensors(data, val_data, model, config, dtype: torch.dtype, device: torch.device):
    """The training series ``x (T, N)`` (contiguous: windows are cut from a strided view of it) and the
    validation series ``(T_val, N)`` or None, checked against ``model`` and ``config``."""
    if config.select == "best_val" and val_data is None:
        raise ValueError("TrainConfig.select='best_val' needs val_data to select by; pass val_data or "
                         "select='last'")
    x = torch.as_tensor(as_series(data, model, "data", config.seq_len + 1), dtype=dtype, device=device).contiguous()
    val_x = None
    if val_data is not None:
        val_x = torch.as_tensor(as_series(val_data, model, "val_data", 2), dtype=dtype, device=device)
    return x, val_x


def lr_schedule(optimizer, config) -> torch.optim.lr_scheduler.ExponentialLR:
    """Exponential decay from ``lr_start`` to ``lr_end`` over ``epochs`` (one step per epoch)."""
    gamma = (config.lr_end / config.lr_start) ** (1.0 / config.epochs)
    return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=gamma)


@contextlib.contextmanager
def compute_settings(config, device: torch.device):
    """Flush subnormal floats to zero and use ``config.threads`` CPU threads while training; restore after.

    Subnormal floats (|x| < 1e-38 in float32) appear as gradients and RAdam moments shrink late in a
    run; x86 CPUs handle them in microcode, 10-100x slower, so flushing them keeps the time per
    update constant. The numerical effect is below the float resolution of the parameters.
    """
    torch.set_flush_denormal(True)
    threads_before = torch.get_num_threads()
    if config.threads is not None and device.type == "cpu":
        torch.set_num_threads(config.threads)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)
        torch.set_num_threads(threads_before)


def progress_bar(config, start_epoch: int, desc: str, show: bool):
    """A tqdm bar over the epochs, or None."""
    if not show:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=config.epochs, initial=start_epoch, desc=desc, unit="epoch", dynamic_ncols=True)


def mean_or_nan(values: list) -> float:
    return float(np.mean(values)) if values else float("nan")


def epoch_record(epoch: int, losses: list, mses: list, gnorms: list, *, alpha: float, G: float, lr: float,
                 time_s: float, warning: str | None) -> dict:
    """One history entry: the epoch's mean loss, MSE and gradient norm over its good updates, the
    forcing strength, the growth bound ``G`` (NaN on epochs without the diagnostic), the learning
    rate, the run's wall time so far (s) and a recovery warning where one happened."""
    record = {"epoch": epoch, "loss": mean_or_nan(losses), "mse": mean_or_nan(mses), "alpha": alpha,
              "grad_norm": mean_or_nan(gnorms), "G": G, "lr": lr, "time_s": time_s}
    if warning is not None:
        record["warning"] = warning
    return record


def validate_epoch(record: dict, model, val_x, config, best: BestByValidation) -> dict | None:
    """On validation epochs (every ``val_every`` and the last), add D_stsp / D_H of a free run against
    ``val_x`` to ``record``, offer the model to ``best`` and return the metrics; else None."""
    epoch = record["epoch"]
    if val_x is None or not (epoch % config.val_every == 0 or epoch == config.epochs):
        return None
    val = validate(model, val_x, config)
    record.update(val)
    best.offer(epoch, val, model)
    return val if "d_stsp" in val else None


VALIDATION_KEYS = ("d_stsp", "d_h", "val_collapsed")


def last_validation(history: list) -> dict:
    """The validation metrics (D_stsp, D_H and, with several starts, ``val_collapsed``) of the latest
    validated record in ``history`` (a resumed run's), or {}."""
    for record in reversed(history):
        if "d_stsp" in record:
            return {key: record[key] for key in VALIDATION_KEYS if key in record}
    return {}


__all__ = ["series_tensors", "lr_schedule", "compute_settings", "progress_bar", "mean_or_nan", "epoch_record",
           "validate_epoch", "last_validation"]
