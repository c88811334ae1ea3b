"""Lyapunov exponents are per time unit only when dt is known, else per step, and say which."""

from __future__ import annotations

import numpy as np
import pytest

import dsrecon
from dsrecon.evaluation import EvalConfig, evaluate


@pytest.fixture(scope="module")
def model_and_series():
    model = dsrecon.make_model("shplrnn", obs_dim=2, latent_dim=3, hidden_dim=4, seed=0)
    t = np.arange(400) * 0.05
    return model, np.stack([np.sin(t), np.cos(t)], axis=1)  # (400, 2)


def test_loaded_series_without_dt_gives_exponents_per_step(model_and_series):
    model, x = model_and_series
    cfg = EvalConfig(lyapunov_steps=50, lyapunov_transient=10, lyapunov_initial=2)
    per_step = evaluate(model, dsrecon.load(x), cfg)
    assert per_step.lyapunov_units == "per step" and per_step.dt is None
    assert per_step.lyapunov.dt is None  # the plot labels the axis per step from this
    per_time = evaluate(model, dsrecon.load(x, dt=0.05), cfg)
    assert per_time.lyapunov_units == "per time unit" and per_time.dt == 0.05
    # the same exponents, scaled by 1 / dt
    np.testing.assert_allclose(per_time.lyapunov_spectrum, np.asarray(per_step.lyapunov_spectrum) / 0.05, rtol=1e-6)


def test_santafe_is_in_samples_unless_dt_is_given():
    pytest.importorskip("reservoirpy")
    assert dsrecon.load("santafe").meta["dt_known"] is False
    assert dsrecon.load("santafe", dt=0.5).meta["dt_known"] is True
