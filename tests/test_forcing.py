"""Forcing policies and the forced rollout: limits (alpha = 0, 1), the aGTF rule, STF, registry."""

from __future__ import annotations

import math

import pytest
import torch

import dsrecon
from dsrecon.forcing import choose_tau, growth_bound
from dsrecon.models.plrnn import ShPLRNN
from dsrecon.rollout import forced_rollout


def _windows(B=4, T=30, N=3, seed=0):
    return torch.randn(B, T + 1, N, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("observation,M", [("identity", 3), ("identity", 5), ("affine", 4)])
def test_alpha_zero_is_free_running_from_the_inferred_start(observation, M):
    m = ShPLRNN(3, M, 20, observation=observation, seed=0, dtype=torch.float64)
    x = _windows()
    out = forced_rollout(m, x, dsrecon.NoForcing().alphas(31))
    free = dsrecon.generate(m, x[:, 0], 31)[:, 1:]  # (B, T, N)
    torch.testing.assert_close(out.x_pred, free, rtol=0, atol=1e-12)


def test_alpha_one_is_teacher_forcing_for_the_identity_observation():
    m = ShPLRNN(3, 3, 20, seed=0, dtype=torch.float64)
    x = _windows()
    out = forced_rollout(m, x, dsrecon.TeacherForcing().alphas(31))
    # each prediction is one step from the observed state: observe(step(x_t))
    one_step = m.observe(m.step(x[:, :-1].reshape(-1, 3))).reshape(4, 30, 3)
    torch.testing.assert_close(out.x_pred, one_step, rtol=0, atol=0)


def test_intermediate_alpha_mixes_states_as_the_spec_says():
    m = ShPLRNN(3, 5, 20, seed=0, dtype=torch.float64)
    x, alpha = _windows(T=10), 0.3
    out = forced_rollout(m, x, dsrecon.GTF(alpha).alphas(11))
    z = m.initial_state(x[:, 0])
    for t in range(1, 11):
        zt = z + alpha * (m.state_from_obs(x[:, t - 1], z) - z)
        z = m.step(zt)
        torch.testing.assert_close(out.z[:, t - 1], z, rtol=0, atol=1e-13)
        torch.testing.assert_close(out.z_hat[:, t], m.state_from_obs(x[:, t], z), rtol=0, atol=1e-13)


def test_forced_recursion_jacobian_is_scaled_by_one_minus_alpha():
    # d z_{t+1} / d z_t = (1 - alpha) J(z~_t) when every coordinate is forced (identity, M = N)
    m = ShPLRNN(3, 3, 20, seed=2, dtype=torch.float64)
    x1, alpha = torch.randn(1, 3, dtype=torch.float64), 0.4
    z = torch.randn(1, 3, dtype=torch.float64)
    f = lambda zz: m.step(zz + alpha * (m.state_from_obs(x1, zz) - zz))  # noqa: E731
    J = torch.autograd.functional.jacobian(f, z).reshape(3, 3)
    zt = z + alpha * (x1 - z)
    torch.testing.assert_close(J, (1 - alpha) * m.jacobian(zt)[0], rtol=0, atol=1e-13)


def test_policy_alphas():
    assert torch.equal(dsrecon.GTF(0.25).alphas(4), torch.full((4,), 0.25, dtype=torch.float64))
    assert torch.equal(dsrecon.NoForcing().alphas(3), torch.zeros(3, dtype=torch.float64))
    assert torch.equal(dsrecon.TeacherForcing().alphas(3), torch.ones(3, dtype=torch.float64))
    assert dsrecon.SparseTF(3).alphas(8).tolist() == [1, 0, 0, 1, 0, 0, 1, 0]
    assert dsrecon.AdaptiveGTF().alphas(2).tolist() == [1.0, 1.0]  # starts at teacher forcing


def test_choose_tau_is_the_error_doubling_time():
    # Lorenz-63: lambda_max = 0.9056 per time unit (SPEC table), dt = 0.01 -> ln 2 / 0.009056 = 76.5
    assert choose_tau(0.9056, 0.01) == 77
    assert dsrecon.SparseTF.from_lyapunov(math.log(2) / 10).tau == 10
    with pytest.raises(ValueError, match="positive"):
        choose_tau(-0.1)


def _two_slope_model():
    """Unclipped 1-D shPLRNN z' = 0.5 z + 1.5 relu(z): slope 2 for z > 0, 0.5 for z < 0."""
    m = ShPLRNN(1, 1, 1, clipped=False, seed=0, dtype=torch.float64)
    with torch.no_grad():
        m.A.fill_(0.5), m.W1.fill_(1.5), m.W2.fill_(1.0), m.h2.fill_(0.0), m.h1.fill_(0.0)
    return m


def test_growth_bound_estimators_on_a_hand_computed_example():
    m = _two_slope_model()
    z_hat = torch.tensor([[1.0, -1.0, -1.0, 1.0], [1.0, 1.0, -1.0, 1.0]], dtype=torch.float64)[..., None]
    # ||J|| along the sequences: (2, .5, .5, 2) and (2, 2, .5, 2)
    assert growth_bound(m, z_hat) == pytest.approx(max((2 * .5 * .5 * 2) ** .25, (2 * 2 * .5 * 2) ** .25), abs=1e-12)
    assert growth_bound(m, z_hat, "batch_max") == pytest.approx(2.0, abs=1e-12)
    assert growth_bound(m, z_hat, "mean_jacobian") == pytest.approx((5 * 2 + 3 * .5) / 8, abs=1e-12)
    assert growth_bound(m, z_hat, "parameter_bound") == pytest.approx(0.5 + 1.5, abs=1e-12)
    with pytest.raises(ValueError, match="geometric_mean"):
        growth_bound(m, z_hat, "median")


def test_adaptive_alpha_jumps_up_and_decays_slowly():
    # J = diag(A) when W1 = 0, so ||J||_2 = max|A_i| = G exactly
    m = ShPLRNN(3, 3, 4, seed=0, dtype=torch.float64)
    z_hat = torch.randn(2, 5, 3, dtype=torch.float64)
    f = dsrecon.AdaptiveGTF(every=5, alpha0=0.2)
    with torch.no_grad():
        m.W1.zero_(), m.A.copy_(torch.tensor([2.0, 0.5, 0.5]))
    f.update(m, z_hat, n_updates=3)  # not a multiple of `every`: nothing happens
    assert f.alpha == 0.2
    f.update(m, z_hat, n_updates=5)  # G = 2 -> alpha_est = 1 - 1/2 = 0.5 > 0.2: jump
    assert f.alpha == pytest.approx(0.5, abs=1e-12)
    with torch.no_grad():
        m.A.copy_(torch.tensor([1.25, 0.5, 0.5]))
    f.update(m, z_hat, n_updates=10)  # alpha_est = 0.2 < 0.5: 0.999 * 0.5 + 0.001 * 0.2 = 0.4997
    assert f.alpha == pytest.approx(0.4997, abs=1e-12)
    with torch.no_grad():
        m.A.copy_(torch.tensor([0.9, 0.5, 0.5]))
    f.update(m, z_hat, n_updates=15)  # contracting: alpha_est = max(0, 1 - 1/0.9) = 0
    assert f.alpha == pytest.approx(0.999 * 0.4997, abs=1e-12)
    g = dsrecon.AdaptiveGTF(every=5, alpha0=0.2)
    g.load_state_dict(f.state_dict())
    assert g.alpha == f.alpha


def test_make_forcing_registry():
    assert isinstance(dsrecon.make_forcing("gtf", alpha=0.1), dsrecon.GTF)
    assert dsrecon.make_forcing("stf", tau=7).config() == {"name": "stf", "tau": 7}
    for name in ("gtf", "agtf", "stf", "tf", "none"):
        f = dsrecon.make_forcing(name)
        assert dsrecon.make_forcing(**f.config()).config() == f.config()
    with pytest.raises(ValueError, match="valid names: gtf, agtf, stf, tf, none"):
        dsrecon.make_forcing("gtff")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        dsrecon.GTF(1.5)
    with pytest.raises(ValueError, match="bad arguments"):
        dsrecon.make_forcing("stf", alpha=0.1)


def test_forced_rollout_checks_shapes():
    m = ShPLRNN(3, 3, 5)
    with pytest.raises(ValueError, match=r"\(B, T \+ 1, N\)"):
        forced_rollout(m, torch.zeros(2, 10, 4), 0.1)
    with pytest.raises(ValueError, match="one value per window step"):
        forced_rollout(m, torch.zeros(2, 10, 3), torch.zeros(5))


# ------------------------------------------------------------------ bounded gradients (SPEC section 3)
MU = 1.9  # slope of the tent map below: |f'| = MU everywhere, so lambda_max = ln MU = 0.642 per step


def tent_plrnn(mu=MU):
    """Clipped shPLRNN (M = N = L = 1) equal on [0, 1] to the tent map z' = mu min(z, 1 - z).

    With W2 = 1, h2 = -1/2: relu(z - 1/2) - relu(z) = relu(z - 1/2) - z on [0, 1], so
    A = -mu, W1 = -2 mu give z' = mu z - 2 mu relu(z - 1/2). Its Jacobian is +-mu everywhere.
    """
    m = ShPLRNN(1, 1, 1, seed=0, dtype=torch.float64)
    with torch.no_grad():
        m.A.fill_(-mu), m.W1.fill_(-2 * mu), m.W2.fill_(1.0), m.h2.fill_(-0.5), m.h1.fill_(0.0)
    return m


def test_tent_plrnn_is_the_tent_map():
    z = torch.linspace(0.01, 0.99, 50, dtype=torch.float64)[:, None]
    torch.testing.assert_close(tent_plrnn().step(z), MU * torch.minimum(z, 1 - z), rtol=0, atol=1e-14)


def _grad_norms(model, series, lengths, alpha, n_windows=8):
    from dsrecon.training import loss_and_grads

    norms = []
    for T in lengths:
        starts = torch.arange(n_windows) * 37
        x = series[starts[:, None] + torch.arange(T + 1)]  # (B, T + 1, 1)
        model.zero_grad()
        loss_and_grads(model, x, torch.full((T + 1,), alpha, dtype=torch.float64), 0.0)
        norms.append(float(torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in model.parameters()]))))
    return torch.tensor(norms, dtype=torch.float64)


def test_forcing_with_alpha_from_G_bounds_gradients_that_explode_when_free_running():
    # Data: a tent map with another slope (1.95), so the model's errors are O(1) along the window.
    s, series = 0.3141, []
    for _ in range(800):
        series.append(s)
        s = 1.95 * min(s, 1 - s)
    series = torch.tensor(series, dtype=torch.float64)[:, None]  # (800, 1)
    model, lengths = tent_plrnn(), list(range(10, 201, 19))
    z_hat = forced_rollout(model, series[None, :200], 1.0).z_hat
    G = growth_bound(model, z_hat)
    assert G == pytest.approx(MU, abs=1e-12)  # ||J|| = mu at every state
    alpha = 1 - 1 / G  # the aGTF choice: (1 - alpha) ||J|| = 1
    free, forced = _grad_norms(model, series, lengths, 0.0), _grad_norms(model, series, lengths, alpha)
    t = torch.tensor(lengths, dtype=torch.float64)
    rate = lambda g: float(torch.linalg.lstsq(torch.stack([t, torch.ones_like(t)], 1), g.log()[:, None]).solution[0])  # noqa: E731
    # free running: d x_T / d theta ~ mu^T, so log ||grad|| grows at ln mu = lambda_max per step, up
    # to a log(T) / T term from the mean over the window (measured: 0.625 vs ln 1.9 = 0.642)
    assert abs(rate(free) - math.log(MU)) < 0.1 * math.log(MU), rate(free)
    assert free[-1] > 1e30
    # forced: products of (1 - alpha) J have norm 1, so no exponential growth; the sum over t of
    # bounded terms of random sign grows at most like sqrt(T) over this range
    assert abs(rate(forced)) < 0.02, rate(forced)
    assert forced.max() < 10 * forced[0], forced
