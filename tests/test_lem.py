"""LEM as a DSR model: equations, bounded states, Jacobian, parameter counts, forcing, errors."""

from __future__ import annotations

import pytest
import torch

import dsrecon
from dsrecon.models.lem import LEM


def reference_step(m: LEM, y, z, u=None):
    """SPEC 2.1's four equations written out gate by gate from the model's parameters."""
    H = m.hidden_dim
    W1, W2, Wz = m.W.split(H)
    b1, b2, bz = m.b.split(H)
    v1 = v2 = vz = vy = 0.0
    if u is not None:
        V1, V2, Vz, Vy = m.V.split(H)
        c1, c2, cz, cy = m.bv.split(H)
        v1, v2, vz, vy = u @ V1.T + c1, u @ V2.T + c2, u @ Vz.T + cz, u @ Vy.T + cy
    dt_n = m.dt * torch.sigmoid(y @ W1.T + v1 + b1)
    dtb_n = m.dt * torch.sigmoid(y @ W2.T + v2 + b2)
    z_n = (1 - dt_n) * z + dt_n * torch.tanh(y @ Wz.T + vz + bz)
    y_n = (1 - dtb_n) * y + dtb_n * torch.tanh(z_n @ m.Wy.T + vy + m.by)
    return y_n, z_n


def finite_difference_jacobian(step, z, eps=1e-6):
    """Central differences, (B, M) -> (B, M, M); error O(eps^2) + O(1e-16 / eps)."""
    B, M = z.shape
    J = torch.empty(B, M, M, dtype=z.dtype)
    for j in range(M):
        e = torch.zeros(M, dtype=z.dtype)
        e[j] = eps
        J[:, :, j] = (step(z + e) - step(z - e)) / (2 * eps)
    return J


@pytest.mark.parametrize("dt", [1.0, 0.3])
def test_step_matches_spec_equations(dt):
    m = LEM(3, 8, dt=dt, seed=1, dtype=torch.float64)
    s = torch.rand(5, 16, dtype=torch.float64) * 2 - 1
    y_ref, z_ref = reference_step(m, s[:, :8], s[:, 8:])
    torch.testing.assert_close(m.step(s), torch.cat([y_ref, z_ref], dim=1), rtol=0, atol=1e-14)


def test_input_fed_step_matches_spec_equations_and_updates_u():
    m = LEM(3, 8, input_fed=True, seed=2, dtype=torch.float64)
    s = torch.rand(5, 3 + 16, dtype=torch.float64) * 2 - 1
    u, y, z = s[:, :3], s[:, 3:11], s[:, 11:]
    y_ref, z_ref = reference_step(m, y, z, u)
    out = m.step(s)
    torch.testing.assert_close(out[:, 3:], torch.cat([y_ref, z_ref], dim=1), rtol=0, atol=1e-14)
    torch.testing.assert_close(out[:, :3], y_ref @ m.B.T + m.c, rtol=0, atol=1e-14)  # u <- B y + c
    torch.testing.assert_close(m.observe(out), out[:, :3])  # identity observation of u


@pytest.mark.parametrize("dt", [1.0, 0.5])
def test_states_stay_in_unit_box_over_long_free_runs(dt):
    """With dt <= 1 each update is a convex combination with a tanh (Rusch et al. 2022, Prop. 3.1),
    so |y|, |z| <= 1 forever when they start there, even with weights 5x the init scale."""
    m = LEM(3, 16, dt=dt, seed=3, dtype=torch.float64)
    with torch.no_grad():
        for p in (m.W, m.Wy, m.b, m.by):
            p.mul_(5.0)
    g = torch.Generator().manual_seed(0)
    s = torch.rand(32, 32, generator=g, dtype=torch.float64) * 2 - 1
    peak = 0.0
    with torch.no_grad():
        for _ in range(5000):
            s = m.step(s)
            peak = max(peak, s.abs().max().item())
    assert peak <= 1.0


def test_states_outside_the_box_never_grow():
    """|y_n| <= max(1, |y_{n-1}|) elementwise, so y0 = B^+(x0 - c) outside [-1, 1] is pulled back."""
    m = LEM(3, 6, seed=4, dtype=torch.float64)
    s = torch.linspace(-4, 4, 12, dtype=torch.float64).expand(7, 12).clone()
    with torch.no_grad():
        for _ in range(200):
            s_next = m.step(s)
            assert torch.all(s_next.abs() <= torch.clamp(s.abs(), min=1.0) + 1e-15)
            s = s_next


@pytest.mark.parametrize("input_fed", [False, True])
def test_autograd_jacobian_matches_finite_differences(input_fed):
    m = LEM(3, 7, dt=0.8, input_fed=input_fed, seed=5, dtype=torch.float64)
    z = torch.rand(4, m.state_dim, dtype=torch.float64) * 2 - 1
    with torch.no_grad():
        J_fd = finite_difference_jacobian(m.step, z)
    J = m.jacobian(z)
    assert J.shape == (4, m.state_dim, m.state_dim)
    torch.testing.assert_close(J, J_fd, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("H,N", [(1, 1), (8, 3), (31, 5)])
def test_parameter_count_autonomous(H, N):
    """SPEC 2.1: 4H^2 + 4H for the cell plus the readout HN + N."""
    assert LEM(N, H, seed=0).n_params == 4 * H * H + 4 * H + H * N + N


def test_parameter_count_input_fed_matches_gtf_paper():
    """Official LEM structure (inp2hid N->4H, hid2hid H->3H, transform_z H->H, classifier H->N):
    4H^2 + 4HN + 8H + HN + N. H = 31 on the 5-d ECG gives 4872, Hess et al. (2023), Table 1."""
    assert LEM(5, 31, input_fed=True, seed=0).n_params == 4872
    H, N = 12, 3
    assert LEM(N, H, input_fed=True, seed=0).n_params == 4 * H * H + 4 * H * N + 8 * H + H * N + N


def test_learned_z0_adds_a_zero_initialized_map():
    m = LEM(3, 8, learned_z0=True, seed=0)
    assert m.n_params == LEM(3, 8, seed=0).n_params + 8 * 3
    x0 = torch.randn(4, 3)
    assert torch.all(m.initial_state(x0)[:, 8:] == 0)
    with torch.no_grad():
        m.init_map.fill_(0.1)
    torch.testing.assert_close(m.initial_state(x0)[:, 8:], x0 @ m.init_map.T)


def test_initial_state_and_forcing_reproduce_the_observation():
    """With H >= N, B has full row rank, so B B^+ = I: forced and initial states read out exactly x."""
    m = LEM(3, 10, seed=6, dtype=torch.float64)
    x = torch.randn(5, 3, dtype=torch.float64)
    s0 = m.initial_state(x)
    torch.testing.assert_close(m.observe(s0), x)
    assert torch.all(s0[:, 10:] == 0)
    s = torch.rand(5, 20, dtype=torch.float64) * 2 - 1
    s_hat = m.state_from_obs(x, s)
    torch.testing.assert_close(m.observe(s_hat), x)
    torch.testing.assert_close(s_hat[:, 10:], s[:, 10:], rtol=0, atol=0)  # z is never forced
    # the null-space part of y is kept: (I - B^+ B) y unchanged
    P = torch.eye(10, dtype=torch.float64) - torch.linalg.pinv(m.B.detach()) @ m.B.detach()
    torch.testing.assert_close(s_hat[:, :10] @ P.T, s[:, :10] @ P.T)


def test_input_fed_forcing_with_alpha_one_is_feeding_the_observation():
    m = LEM(3, 8, input_fed=True, seed=7, dtype=torch.float64)
    s = m.step(m.initial_state(torch.randn(4, 3, dtype=torch.float64)))
    x = torch.randn(4, 3, dtype=torch.float64)
    alpha = 1.0
    s_forced = s + alpha * (m.state_from_obs(x, s) - s)
    y_ref, z_ref = reference_step(m, s[:, 3:11], s[:, 11:], u=x)
    torch.testing.assert_close(m.step(s_forced)[:, 3:], torch.cat([y_ref, z_ref], 1), rtol=0, atol=1e-14)
    torch.testing.assert_close(m.observe(m.initial_state(x)), x)


def test_forcing_signal_is_outside_the_gradient():
    m = LEM(3, 8, seed=0)
    s = torch.zeros(2, 16)
    out = m.state_from_obs(torch.randn(2, 3), s)
    assert not out.requires_grad


def test_same_seed_same_model_and_config_rebuilds():
    a, b = LEM(3, 8, dt=0.5, seed=11), LEM(3, 8, dt=0.5, seed=11)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    assert not torch.equal(a.W, LEM(3, 8, dt=0.5, seed=12).W)
    rebuilt = dsrecon.make_model("lem", **a.config())
    rebuilt.load_state_dict(a.state_dict())
    s = torch.rand(3, 16)
    torch.testing.assert_close(rebuilt.step(s), a.step(s), rtol=0, atol=0)
    assert a.regularization().item() == 0.0


def test_initialization_scales():
    H = 64
    m = LEM(3, H, seed=0, dtype=torch.float64)
    bound = H ** -0.5
    for p in (m.W, m.b, m.Wy, m.by, m.c):
        assert p.abs().max().item() <= bound
    # Kaiming-normal readout: std sqrt(2/H); 192 samples, so within 20%
    assert abs(m.B.std().item() / (2 / H) ** 0.5 - 1) < 0.2


@pytest.mark.parametrize("kwargs,match", [
    (dict(obs_dim=3, hidden_dim=8, dt=1.5), "0 < dt <= 1"),
    (dict(obs_dim=3, hidden_dim=8, dt=0.0), "0 < dt <= 1"),
    (dict(obs_dim=3, hidden_dim=0), "hidden_dim must be a positive integer"),
    (dict(obs_dim=0, hidden_dim=4), "obs_dim must be a positive integer"),
    (dict(obs_dim=3, hidden_dim=4, dtype="int8"), "dtype"),
])
def test_bad_arguments_give_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LEM(**kwargs)


def test_wrong_observation_shape_is_rejected():
    with pytest.raises(ValueError, match=r"shape \(B, N\) with N = 3"):
        LEM(3, 4, seed=0).initial_state(torch.zeros(2, 5))
