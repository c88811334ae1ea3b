"""``inspect_data``: what a series shows before it is fitted (size, dt, time scales, lambda_max, noise)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import dsrecon
from dsrecon.inspection import DataSummary, inspect_data, noise_level


@pytest.fixture(scope="module")
def lorenz():
    """Lorenz-63, 100 time units at dt = 0.01 (fixed-step RK4), z-scored, (10000, 3)."""
    return dsrecon.simulate("lorenz63", 10_000, method="rk4", cache=False, progress=False).x


def test_noise_level_reads_added_white_noise(lorenz):
    """5 % white noise added to a finely sampled flow reads as 0.05 (within 10 %); the clean flow
    has no power in the top quarter of its band (below 0.1 %); white noise reads as about 1."""
    rng = np.random.default_rng(0)
    std = lorenz.std(axis=0)
    noisy = lorenz + 0.05 * std * rng.standard_normal(lorenz.shape)
    np.testing.assert_allclose(noise_level(noisy), 0.05, rtol=0.1)
    assert np.all(noise_level(lorenz) < 1e-3)
    assert noise_level(rng.standard_normal(4096))[0] == pytest.approx(1.0, abs=0.1)


def test_inspect_lorenz_with_dt_reports_per_time_unit(lorenz):
    s = inspect_data(lorenz, dt=0.01)
    assert isinstance(s, DataSummary) and (s.n_steps, s.n_dims) == (10_000, 3)
    assert s.dt_known and s.dt == 0.01 and s.lambda_max_units == "per time unit"
    # literature 0.906 per time unit (SPEC); Rosenstein on 100 time units: within 0.6 .. 1.3
    assert 0.6 < s.lambda_max < 1.3
    assert 14 <= s.mi_time[0] <= 20  # first MI minimum of x at dt = 0.01: 17 samples (embedding tests)
    d = json.loads(json.dumps(s.to_dict()))
    assert d["lambda_max_units"] == "per time unit" and len(d["noise"]) == 3 and "Hann" in d["noise_method"]
    assert "lambda_max (Rosenstein)" in str(s) and "per time unit" in str(s)


def test_inspect_without_dt_reports_per_step(lorenz):
    """dt unknown: the same series in samples; lambda_max per step = per time unit x dt."""
    s = inspect_data(lorenz[:, 0])
    assert not s.dt_known and s.dt == 1.0 and s.time_unit == "step" and s.lambda_max_units == "per step"
    assert 0.006 < s.lambda_max < 0.013  # 0.6 .. 1.3 per time unit x dt = 0.01
    assert "dt unknown" in str(s) and "per step" in str(s)
    traj = dsrecon.load(lorenz[:, 0])  # a loaded array without dt: unknown, taken from meta
    assert traj.meta["dt_known"] is False and not inspect_data(traj).dt_known
    assert inspect_data(dsrecon.load(lorenz[:, 0], dt=0.01)).dt_known


def test_inspect_short_series_does_not_fail():
    """Too short for Rosenstein's settings: lambda_max None with the reason, the rest reported."""
    x = np.sin(np.arange(200) / 3.0) + 0.01 * np.random.default_rng(0).standard_normal(200)
    s = inspect_data(x)
    assert s.n_steps == 200 and (s.lambda_max is None or math.isfinite(s.lambda_max))
    with pytest.raises(ValueError, match="T >= 32"):
        inspect_data(np.zeros(10))
    with pytest.raises(ValueError, match="dt must be a positive number"):
        inspect_data(x, dt=-1.0)


def test_lambda_max_of_a_fast_saturating_system_lorenz96():
    """Lorenz-96 (N = 6, F = 8), 500 time units at dt = 0.05: the true lambda_max is 0.95 per time
    unit (Benettin/QR on the equations, benchmarks/zoo_systems.py: 0.945 over 500 and 0.961 over
    1,000 time units). Neighbour
    distances reach the attractor's size within about 2 MI times here, so a fit window fixed at 1-10
    MI times reads mostly the plateau (about half the true value or less); the window ended where
    the curve nears its plateau gives the exponent within 30 %."""
    x = dsrecon.simulate("lorenz96", 10_000, dt=0.05, params={"N": 6, "F": 8.0}, method="rk4", cache=False,
                         progress=False).x
    s = inspect_data(x, dt=0.05)
    assert s.lambda_max == pytest.approx(0.95, rel=0.3)
    assert "line fitted over steps" in s.lambda_max_note


def test_lambda_max_is_none_where_neighbours_start_near_saturation():
    """Too few points for the attractor's dimension: 2,000 points of Lorenz-96 with N = 20 (an
    attractor of dimension above 10) have nearest neighbours within one e-fold of the attractor's
    size, so there is no stretch of exponential growth to fit; the estimate is None with the
    reason, not a slope of the plateau near 0."""
    x = dsrecon.simulate("lorenz96", 2_000, dt=0.05, params={"N": 20, "F": 8.0}, method="rk4", cache=False,
                         progress=False).x
    s = inspect_data(x, dt=0.05)
    assert s.lambda_max is None and "does not grow by 1 e-fold" in s.lambda_max_note
