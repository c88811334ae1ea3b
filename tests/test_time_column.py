"""A csv time column (``t`` / ``time``) gives dt and never reaches the model."""

from __future__ import annotations

import numpy as np
import pytest

import dsrecon


def test_csv_time_column_sets_dt_and_is_dropped(tmp_path):
    t = 3.0 + 0.02 * np.arange(50)
    x = np.stack([np.sin(t), np.cos(t)], axis=1)
    path = tmp_path / "series.csv"
    np.savetxt(path, np.column_stack([t, x]), delimiter=",", header="Time,a,b", comments="")
    traj = dsrecon.load(path)
    assert traj.dt == pytest.approx(0.02) and traj.meta.get("dt_known", True)
    assert traj.x.shape == (50, 2) and traj.meta["columns"] == ["a", "b"] and traj.meta["time_column"] == "Time"
    np.testing.assert_allclose(traj.x, x)
    assert dsrecon.load(path, dt=0.5).dt == 0.5  # an explicit dt wins


def test_csv_without_time_column_is_in_samples(tmp_path):
    path = tmp_path / "plain.csv"
    np.savetxt(path, np.random.default_rng(0).standard_normal((20, 2)), delimiter=",", header="a,b", comments="")
    traj = dsrecon.load(path)
    assert traj.dt == 1.0 and traj.meta["dt_known"] is False and traj.n_dims == 2


def test_csv_with_irregular_time_fails_with_the_fix(tmp_path):
    t = np.cumsum(np.r_[0.0, np.full(10, 0.1), 0.3, np.full(10, 0.1)])
    path = tmp_path / "gap.csv"
    np.savetxt(path, np.column_stack([t, np.sin(t)]), delimiter=",", header="t,x", comments="")
    with pytest.raises(ValueError, match="not uniform.*resample"):
        dsrecon.load(path)
