"""Delay embedding and the choice of its delay (mutual information) and dimension (FNN)."""

from __future__ import annotations

import numpy as np
import pytest

import dsrecon
from dsrecon.data import Trajectory, standardize
from dsrecon.embedding import (
    autocorrelation, choose_delay, choose_embedding_dim, delay_embed, false_nearest_neighbours,
    mutual_information,
)


@pytest.fixture(scope="module")
def lorenz_x():
    """x coordinate of a 200-time-unit Lorenz-63 run (20,000 steps, dt = 0.01).

    Fixed-step RK4 at dt = 0.01 (a few seconds instead of about 20 s for dopri5 at 1e-9): the
    delay and dimension are properties of the attractor, not of the last digits of one orbit.
    """
    traj = dsrecon.simulate("lorenz63", 20_000, method="rk4", cache=False, progress=False)
    return traj.x[:, 0]


def test_delay_embed_matches_definition():
    x = np.arange(10.0)
    emb = delay_embed(x, (0, 3, 1))  # x_emb[t] = (x[t], x[t+3], x[t+1])
    assert emb.shape == (7, 3)
    np.testing.assert_array_equal(emb[2], [2.0, 5.0, 3.0])


def test_delay_embed_multichannel_and_trajectory():
    x = np.stack([np.arange(10.0), 100 + np.arange(10.0)], axis=1)  # (10, 2)
    emb = delay_embed(x, (0, 2))
    assert emb.shape == (8, 4)
    np.testing.assert_array_equal(emb[0], [0.0, 100.0, 2.0, 102.0])  # delay-major columns
    traj = standardize(Trajectory(x ** 2, dt=0.5, name="sq"))
    out = delay_embed(traj, [0, 2])
    assert isinstance(out, Trajectory) and out.meta["delays"] == [0, 2] and out.dt == 0.5
    np.testing.assert_allclose(out.unstandardize(), delay_embed(x ** 2, [0, 2]), atol=1e-9)


def test_delay_embed_rejects_bad_delays():
    with pytest.raises(ValueError, match="distinct non-negative"):
        delay_embed(np.arange(10.0), (0, -1))
    with pytest.raises(ValueError, match="too short for max delay 9"):
        delay_embed(np.arange(10.0), (0, 9))


def test_mutual_information_basics():
    rng = np.random.default_rng(0)
    noise = rng.standard_normal(20_000)
    mi = mutual_information(noise, 5)
    # lag 0 is (about) the entropy of the binned series, > 1 nat for 32 bins; independent samples
    # share nothing but the histogram bias, at most (bins - 1)^2 / (2 T) = 0.024 nats
    assert mi[0] > 1.0 and np.all(mi[1:] < 0.024)


@pytest.mark.parametrize("period", [100.0, 64.7, 50 * np.pi])
def test_choose_delay_on_sine_is_quarter_period(period):
    # sin(w t) and sin(w (t + P/4)) = cos(w t) are the most independent pair: MI minimum at P/4
    x = np.sin(2 * np.pi * np.arange(20_000) / period)
    assert abs(choose_delay(x) - period / 4) <= 1.0


def test_choose_delay_falls_back_to_autocorrelation_with_warning():
    # sine of period 400: MI falls until lag 100, the autocorrelation cos(2 pi tau / 400) crosses
    # 1/e at 400 arccos(1/e) / (2 pi) = 75.99, so with max_lag = 90 only the fallback applies
    x = np.sin(2 * np.pi * np.arange(4000) / 400.0)
    assert autocorrelation(x, 0)[0] == pytest.approx(1.0)
    with pytest.warns(UserWarning, match="using the autocorrelation's first 1/e crossing"):
        lag = choose_delay(x, max_lag=90)
    assert abs(lag - 76) <= 1
    with pytest.raises(ValueError, match="pass a larger max_lag"):
        choose_delay(x, max_lag=20)


def test_lorenz_delay_and_fnn_dimension(lorenz_x):
    # first MI minimum of Lorenz-63 x at dt = 0.01 is about 0.17 time units (Fraser & Swinney
    # style estimates quote 15-20 samples); FNN reaches zero at dimension 3 (Kennel et al. 1992)
    delay = choose_delay(lorenz_x)
    assert 14 <= delay <= 22
    fnn = false_nearest_neighbours(lorenz_x, delay, max_dim=5)
    assert fnn[0] > 0.5 and fnn[2] < 0.01
    assert choose_embedding_dim(lorenz_x, delay) == 3


def test_fnn_of_noise_stays_high():
    # white noise has no low-dimensional embedding: FNN never drops to zero
    x = np.random.default_rng(1).standard_normal(5000)
    assert false_nearest_neighbours(x, 1, max_dim=4).min() > 0.1
    with pytest.raises(ValueError, match="stays above 0.01 up to dimension 4"):
        choose_embedding_dim(x, 1, max_dim=4)


def test_scalar_series_required():
    with pytest.raises(ValueError, match=r"choose_delay needs a scalar series.*pass one column"):
        choose_delay(np.zeros((100, 2)))
