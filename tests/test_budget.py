"""The training-time budget of a fit (issue 16 item 3): durations, the plan, and the fit that keeps it."""

import numpy as np
import pytest

import dsrecon
from dsrecon.budget import BudgetPlan, parse_duration


@pytest.mark.parametrize("text,seconds", [("90s", 90.0), ("10m", 600.0), ("10min", 600.0), ("1.5h", 5400.0),
                                          ("45", 45.0), (30, 30.0), (" 2m ", 120.0)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["ten minutes", "10 d", "-5m", "0", "", "nan"])
def test_bad_durations_say_what_is_accepted(text):
    with pytest.raises(ValueError, match="90s, 10m or 1.5h|positive duration"):
        parse_duration(text)


def test_plan_keeps_the_epochs_that_fit_and_caps_the_others():
    fits = BudgetPlan(epoch_s=0.5, requested=600, budget_s=600)
    assert fits.epochs == 600 and not fits.capped and "budget" in fits.message
    over = BudgetPlan(epoch_s=4.0, requested=600, budget_s=600)
    assert over.epochs == 150 and over.capped and "150 epochs instead" in over.message
    assert BudgetPlan(epoch_s=1000.0, requested=600, budget_s=600).epochs == 1  # at least one epoch


def test_fit_measures_the_epoch_and_caps_the_run_to_its_budget():
    t = np.arange(3000) * 0.05
    x = np.stack([np.sin(t), np.cos(1.3 * t), np.sin(0.7 * t + 1)], axis=1)
    kw = dict(epochs=1000, batches_per_epoch=20, seq_len=50, hidden_dim=8, val_every=1000, progress=False,
              verbose=False, eval_config=dsrecon.EvalConfig(lyapunov=False))
    with pytest.warns(RuntimeWarning, match="epochs instead"):
        rec = dsrecon.fit(x, budget=0.05, **kw)
    planned = rec.settings["budget"]
    assert planned["requested_epochs"] == 1000 and planned["epochs"] < 1000 and planned["epoch_s"] > 0
    assert rec.settings["train"]["epochs"] == planned["epochs"] == len(rec.history)
    assert planned["epochs"] == max(1, int(0.05 // planned["epoch_s"]))
