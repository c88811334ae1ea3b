"""Facts about Lyapunov exponents: model spectra (QR), Kaplan-Yorke, Rosenstein, correlation dimension."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dsrecon._nolds import import_nolds
from dsrecon.lyapunov import (
    correlation_dimension,
    kaplan_yorke_dimension,
    lyapunov_spectrum,
    rosenstein_lambda_max,
)
from dsrecon.models.base import Model
from reference_models import BETA, SIGMA, LinearMap, Lorenz63RK4


def _lorenz_starts(n: int, seed: int = 0) -> torch.Tensor:
    """n starts near the attractor, spread by a seeded generator; the transient does the rest."""
    gen = torch.Generator().manual_seed(seed)
    return torch.tensor([1.0, 1.0, 20.0], dtype=torch.float64) + 5 * torch.randn(n, 3, generator=gen, dtype=torch.float64)


# ------------------------------------------------------------------ model spectra
def test_linear_map_exponents_are_log_abs_eigenvalues():
    """For a diagonal A the QR factors stay diagonal: the exponents are log|a_i| to rounding."""
    a = np.array([1.1, -0.9, 0.5, 0.05])
    res = lyapunov_spectrum(LinearMap(np.diag(a)), z0=np.ones((2, 4)), n_steps=2000, transient=100, qr_every=3)
    np.testing.assert_allclose(res.exponents, np.sort(np.log(np.abs(a)))[::-1], atol=1e-8)
    assert res.exponents_per_time is None and res.per_initial.shape == (2, 4)


def test_non_normal_linear_map_converges_like_one_over_n():
    """Upper-triangular A: exponents log|a_ii|, with an O(1/n) transient from the off-diagonal
    coupling (bound 1e-3 at n = 10,000; the per-time version divides by dt)."""
    a = np.array([[0.9, 2.0, 0.0], [0.0, -0.6, 1.0], [0.0, 0.0, 0.3]])
    res = lyapunov_spectrum(LinearMap(a), np.ones(3), n_steps=10_000, transient=0, dt=0.5, qr_every=10)
    expected = np.log([0.9, 0.6, 0.3])
    np.testing.assert_allclose(res.exponents, expected, atol=1e-3)
    np.testing.assert_allclose(res.exponents_per_time, expected / 0.5, atol=2e-3)
    assert res.lambda_max == pytest.approx(res.exponents_per_time[0])


def test_analytic_rk4_jacobian_equals_the_contract_default():
    model = Lorenz63RK4()
    z = _lorenz_starts(5)
    default = Model.jacobian(model, z)  # torch.func.jacrev, vmapped
    torch.testing.assert_close(model.jacobian(z), default, rtol=1e-12, atol=1e-12)


def test_lorenz63_spectrum_from_the_rk4_map():
    """Lorenz-63 (SPEC table): 0.9056, 0, -14.5723 per time unit, sum -(s + 1 + b) = -13.6667,
    D_KY 2.062. 16 starts x 200 time units (20,000 steps of dt = 0.01): the sum is set by the
    constant divergence, so it is exact up to RK4's error (~1e-5 per time unit); the finite-time
    spread of lambda_1 over 200 time units is ~0.03 per start, so the mean of 16 is within 0.02."""
    res = lyapunov_spectrum(Lorenz63RK4(), _lorenz_starts(16), n_steps=20_000, transient=1000,
                            qr_every=5, dt=0.01)
    lam = res.exponents_per_time
    assert lam.sum() == pytest.approx(-(SIGMA + 1 + BETA), abs=1e-3)
    assert lam[0] == pytest.approx(0.906, abs=0.02)
    assert lam[1] == pytest.approx(0.0, abs=0.02)
    assert lam[2] == pytest.approx(-14.572, abs=0.03)
    assert res.kaplan_yorke == pytest.approx(2.062, abs=0.01)
    assert res.history.shape[1] == 3 and res.history_steps[-1] == 20_000


@pytest.mark.slow
def test_lorenz63_spectrum_over_1000_time_units():
    """SPEC: our QR run over 1,000 time units gave 0.9041, 0.0000, -14.5708."""
    res = lyapunov_spectrum(Lorenz63RK4(), _lorenz_starts(8, seed=1), n_steps=100_000, transient=1000,
                            qr_every=10, dt=0.01)
    lam = res.exponents_per_time
    assert lam[0] == pytest.approx(0.9056, abs=0.01)
    assert lam[1] == pytest.approx(0.0, abs=0.005)
    assert lam.sum() == pytest.approx(-13.6667, abs=1e-3)
    assert res.kaplan_yorke == pytest.approx(2.062, abs=0.003)


@pytest.mark.gpu
def test_spectrum_agrees_on_cpu_and_cuda():
    z0 = _lorenz_starts(4)
    cpu = lyapunov_spectrum(Lorenz63RK4(), z0=z0, n_steps=2000, dt=0.01)
    gpu = lyapunov_spectrum(Lorenz63RK4().cuda(), z0=z0.cuda(), n_steps=2000, dt=0.01)
    np.testing.assert_allclose(cpu.exponents, gpu.exponents, rtol=1e-6, atol=1e-9)


def test_spectrum_input_checks():
    model = LinearMap(np.eye(2) * 0.5)
    with pytest.raises(ValueError, match="exactly one"):
        lyapunov_spectrum(model, np.ones(2), z0=np.ones(2), n_steps=10)
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        lyapunov_spectrum(model, np.ones(3), n_steps=10)
    res = lyapunov_spectrum(model, np.ones((50, 2)), n_steps=10, transient=0, n_initial=5)
    assert res.per_initial.shape == (5, 2)


# ------------------------------------------------------------------ Kaplan-Yorke
def test_kaplan_yorke_dimension():
    assert kaplan_yorke_dimension([0.9056, 0.0, -14.5723]) == pytest.approx(2 + 0.9056 / 14.5723)  # 2.062
    assert kaplan_yorke_dimension([-0.1, -1.0]) == 0.0  # stable fixed point
    assert kaplan_yorke_dimension([0.5, 0.1]) == 2.0  # volume-expanding: all of M
    assert kaplan_yorke_dimension([0.0, -1.0]) == pytest.approx(1.0)  # limit cycle
    assert kaplan_yorke_dimension([-2.0, 1.0, 0.5]) == pytest.approx(2.75)  # order does not matter


# ------------------------------------------------------------------ Rosenstein
ROSENSTEIN_LORENZ = dict(emb_dim=5, trajectory_len=250, fit_offset=50)  # fit over 0.5-2.5 time units


def test_rosenstein_equals_nolds_lyap_r_poly(lorenz63_paper_test):
    """Same algorithm as nolds.lyap_r(fit="poly"): the same number, explicit and automatic settings."""
    nolds = import_nolds()
    x = lorenz63_paper_test[:3000, 0].astype(np.float64)
    for kw in (dict(emb_dim=3, lag=10, min_tsep=100, trajectory_len=50),
               dict(emb_dim=5, trajectory_len=40),  # lag and min_tsep chosen automatically
               dict(emb_dim=1, lag=1, min_tsep=0, trajectory_len=10, fit_offset=2)):
        ours = rosenstein_lambda_max(x, **kw, tau=0.01)
        ref = nolds.lyap_r(x, **kw, fit="poly", tau=0.01)
        assert ours == pytest.approx(ref, rel=1e-9), kw


def test_rosenstein_equals_nolds_on_quantized_data_with_ties():
    """8-bit data (like the Santa Fe laser) has exactly equal distances: the neighbour chosen on a
    tie must be nolds' (the first index) for the results to agree."""
    nolds = import_nolds()
    x = np.empty(2500)
    x[0] = 0.3
    for i in range(1, 2500):
        x[i] = 3.9 * x[i - 1] * (1 - x[i - 1])  # logistic map
    q = np.round(255 * x)
    kw = dict(emb_dim=3, lag=1, min_tsep=5, trajectory_len=10)
    assert rosenstein_lambda_max(q, **kw) == pytest.approx(nolds.lyap_r(q, **kw, fit="poly"), rel=1e-12)


def test_rosenstein_on_lorenz_x_is_near_the_true_lambda_max(lorenz63_paper_test):
    """lambda_1 = 0.906 per time unit; Rosenstein on the x coordinate (20,000 steps, embedding 5,
    nolds' automatic lag and mean-period min_tsep, line over 0.5-2.5 time units) gives 0.867:
    within 10% (the method underestimates slightly: the divergence curve bends before saturating)."""
    lam = rosenstein_lambda_max(lorenz63_paper_test[:20_000, 0], **ROSENSTEIN_LORENZ, tau=0.01)
    assert lam == pytest.approx(0.906, rel=0.10)


@pytest.mark.slow
def test_rosenstein_equals_nolds_on_10000_points(lorenz63_paper_test):
    nolds = import_nolds()
    x = lorenz63_paper_test[:10_000, 0].astype(np.float64)
    ours = rosenstein_lambda_max(x, **ROSENSTEIN_LORENZ, tau=0.01)
    ref = nolds.lyap_r(x, **ROSENSTEIN_LORENZ, fit="poly", tau=0.01)
    assert ours == pytest.approx(ref, rel=1e-9)
    assert ours == pytest.approx(0.906, rel=0.10)


def test_rosenstein_multivariate_and_input_checks(lorenz63_paper_test):
    x = lorenz63_paper_test[:20_000].astype(np.float64)
    lam = rosenstein_lambda_max(x, emb_dim=1, trajectory_len=250, fit_offset=50, tau=0.01)
    assert lam == pytest.approx(0.906, rel=0.15)  # the full state as the orbit
    with pytest.raises(ValueError, match="at least"):
        rosenstein_lambda_max(x[:300, 0], emb_dim=5, lag=10, min_tsep=100, trajectory_len=100)
    with pytest.raises(ValueError, match="poly"):
        rosenstein_lambda_max(x[:, 0], fit="RANSAC")


@pytest.mark.gpu
def test_rosenstein_agrees_on_cpu_and_cuda(lorenz63_paper_test):
    x = torch.as_tensor(lorenz63_paper_test[:10_000, 0], dtype=torch.float64)
    assert rosenstein_lambda_max(x, **ROSENSTEIN_LORENZ) == pytest.approx(
        rosenstein_lambda_max(x.cuda(), **ROSENSTEIN_LORENZ), rel=1e-9)


# ------------------------------------------------------------------ correlation dimension
def test_correlation_dimension_of_lorenz_and_of_a_circle(lorenz63_paper_test):
    """Lorenz-63: 2.05 +- 0.01 (Grassberger & Procaccia 1983); 10,000 points with a Theiler window
    of 10 steps give 2.04. A circle (a limit cycle) is one-dimensional."""
    assert correlation_dimension(lorenz63_paper_test[:10_000], min_tsep=10) == pytest.approx(2.05, abs=0.1)
    t = np.linspace(0, 2 * math.pi * 20, 5000, endpoint=False)
    circle = np.stack([np.cos(t), np.sin(t)], axis=1)
    assert correlation_dimension(circle) == pytest.approx(1.0, abs=0.05)
