"""A time budget for a fit: the training time per epoch measured before the run, and the number of
epochs that fits a budget the user sets (``dsrecon fit DATA --budget 10m``).

The estimate trains a copy of the model, with the run's settings, for one epoch of a few updates
and one of five times as many, after one warm-up update that absorbs one-off costs such as loading
the compiled kernel. The two epochs tell the epoch's fixed cost from the cost per update, and they
cover the model, the data's dimension, the window length and the backend as they will run.
Validation every ``val_every`` epochs and the final evaluation are not included.
"""

from __future__ import annotations

import copy
import math
import re
import time
from dataclasses import replace

__all__ = ["BudgetPlan", "parse_duration", "plan_epochs"]

_UNITS = {"s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


def parse_duration(text) -> float:
    """Seconds of a duration: a number of seconds, or a number with a unit ``s``, ``m``/``min`` or ``h``
    (``"90s"``, ``"10m"``, ``"1.5h"``). Raises ValueError, naming the accepted forms, otherwise."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(s|m|min|h)?\s*", str(text))
        if match is None:
            raise ValueError(f"a budget is a duration such as 90s, 10m or 1.5h (a bare number is seconds), "
                             f"got {text!r}")
        value = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"a budget must be a positive duration, got {text!r}")
    return value


class BudgetPlan:
    """What :func:`plan_epochs` found: ``epoch_s`` (measured training seconds per epoch), ``epochs``
    (the epochs to run: the requested ones, or fewer to fit the budget), ``requested``, ``budget_s``,
    and ``message`` (one line for the user)."""

    def __init__(self, epoch_s: float, requested: int, budget_s: float):
        self.epoch_s, self.requested, self.budget_s = epoch_s, requested, budget_s
        self.epochs = requested if requested * epoch_s <= budget_s else max(1, int(budget_s // epoch_s))
        estimate = f"~{epoch_s:.3g} s of training per epoch, {requested} epochs ~ {_minutes(requested * epoch_s)}"
        if self.capped:
            self.message = (f"{estimate}: more than the budget of {_minutes(budget_s)}; training {self.epochs} "
                            f"epochs instead (raise --budget, or shorten --seq-len or the model)")
        else:
            self.message = f"{estimate} (budget {_minutes(budget_s)})"

    @property
    def capped(self) -> bool:
        return self.epochs < self.requested


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def plan_epochs(model, data, config, forcing, budget_s: float, probe_updates: int = 5) -> BudgetPlan:
    """Measure the training time per epoch of ``model`` on ``data`` with ``config`` and ``forcing``
    (on copies: the model and the policy are not changed) and plan the epochs that fit ``budget_s``."""
    from dsrecon.training import train

    def run(updates: int) -> float:
        # no validation data here: the probe keeps its last parameters whatever the run selects by
        cfg = replace(config, epochs=1, batches_per_epoch=updates, val_every=1, select="last")
        start = time.perf_counter()
        train(copy.deepcopy(model), data, cfg, copy.deepcopy(forcing), progress=False)
        return time.perf_counter() - start

    run(1)  # warm-up: one-off costs (kernel loading, first allocations)
    short, long = run(probe_updates), run(5 * probe_updates)
    # an epoch of n updates costs its fixed part (start, bookkeeping) plus n per-update costs
    per_update = max(long - short, 0.0) / (4 * probe_updates)
    epoch_s = short + per_update * (config.batches_per_epoch - probe_updates)
    return BudgetPlan(max(epoch_s, per_update), config.epochs, budget_s)
