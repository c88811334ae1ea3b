"""The shPLRNN: equations, analytic Jacobian, initialization, observation models, parameter counts."""

from __future__ import annotations

import pytest
import torch

import dsrecon
from dsrecon.models.plrnn import ShPLRNN


def _model(clipped=True, observation="identity", N=3, M=3, L=20, seed=1):
    return ShPLRNN(N, M, L, clipped=clipped, observation=observation, seed=seed, dtype=torch.float64)


@pytest.mark.parametrize("clipped", [True, False])
def test_step_is_the_paper_equation(clipped):
    m = _model(clipped)
    with torch.no_grad():
        m.h1.normal_(generator=torch.Generator().manual_seed(3))
    z = torch.randn(7, 3, dtype=torch.float64)
    u = z @ m.W2.T
    phi = torch.relu(u + m.h2) - (torch.relu(u) if clipped else 0)
    expected = m.A * z + phi @ m.W1.T + m.h1
    torch.testing.assert_close(m.step(z), expected, rtol=0, atol=1e-14)


@pytest.mark.parametrize("clipped", [True, False])
@pytest.mark.parametrize("observation,M", [("identity", 3), ("identity", 6), ("affine", 4)])
def test_analytic_jacobian_equals_autograd(clipped, observation, M):
    # diag(A) + W1 diag(m) W2 is exact for a piecewise-linear map; agreement to 1e-10 in float64
    # (ReLU kinks are hit with probability 0 by random states).
    m = _model(clipped, observation, M=M, L=30)
    z = 2 * torch.randn(64, M, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    J_auto = torch.func.vmap(torch.func.jacrev(lambda zb: m.step(zb[None])[0]))(z)
    torch.testing.assert_close(m.jacobian(z), J_auto, rtol=0, atol=1e-10)


def test_initialization_follows_the_paper():
    M, L = 8, 400
    m = ShPLRNN(3, M, L, seed=5)
    assert torch.all(m.A > 0) and torch.all(m.A <= 1 + 1e-6)  # diag of K / lambda_max(K), K SPD
    assert m.W1.abs().max() <= 1 / L ** 0.5 and m.W2.abs().max() <= 1 / M ** 0.5
    assert torch.all(m.h1 == 0)
    assert m.h2.abs().max() <= 1 / L ** 0.5 and m.h2.abs().max() > 0  # clipped: U(+-1/sqrt(L))
    assert torch.all(ShPLRNN(3, M, L, clipped=False, seed=5).h2 == 0)
    # the same seed gives the same model, another seed another one; no global RNG involved
    torch.testing.assert_close(ShPLRNN(3, M, L, seed=5).W1, m.W1, rtol=0, atol=0)
    assert not torch.equal(ShPLRNN(3, M, L, seed=6).W1, m.W1)
    gen = torch.Generator().manual_seed(5)
    torch.testing.assert_close(ShPLRNN(3, M, L, generator=gen).W1, m.W1, rtol=0, atol=0)


def test_parameter_count_matches_the_gtf_paper_ecg_model():
    # GTF paper, ECG: M=5, L=250, affine 5 -> 5, clipped: 5 + 5*250 + 250*5 + 5 + 250 + 25 = 2785
    m = dsrecon.make_model("shplrnn", obs_dim=5, latent_dim=5, hidden_dim=250, observation="affine")
    assert m.n_params == 2785
    # identity, M = N: M + 2ML + M + L; M > N adds the (M - N) x N initial-state map
    assert ShPLRNN(3, 3, 50).n_params == 3 + 300 + 3 + 50
    assert ShPLRNN(3, 5, 50).n_params == 5 + 500 + 5 + 50 + 2 * 3


def test_identity_observation_and_forcing():
    m = _model(observation="identity", M=5)
    x = torch.randn(4, 3, dtype=torch.float64)
    z = torch.randn(4, 5, dtype=torch.float64)
    torch.testing.assert_close(m.observe(z), z[:, :3], rtol=0, atol=0)
    zf = m.state_from_obs(x, z)
    torch.testing.assert_close(zf[:, :3], x, rtol=0, atol=0)
    torch.testing.assert_close(zf[:, 3:], z[:, 3:], rtol=0, atol=0)  # unobserved coordinates kept
    z0 = m.initial_state(x)
    torch.testing.assert_close(z0, torch.cat([x, x @ m.C.T], 1), rtol=0, atol=0)


def test_affine_observation_uses_the_pseudo_inverse():
    m = _model(observation="affine", N=3, M=5)
    x = torch.randn(4, 3, dtype=torch.float64)
    z = torch.randn(4, 5, dtype=torch.float64)
    zf = m.state_from_obs(x, z)
    torch.testing.assert_close(m.observe(zf), x, rtol=0, atol=1e-12)  # B B^+ = I for full row rank
    # only the null space of B is taken from z: z - zf lies in the row space of B
    P = torch.linalg.pinv(m.B) @ m.B
    torch.testing.assert_close((z - zf) @ P.T, z - zf, rtol=0, atol=1e-12)
    torch.testing.assert_close(m.observe(m.initial_state(x)), x, rtol=0, atol=1e-12)
    # M = N: B^+ = B^-1, the forced state is independent of z
    sq = _model(observation="affine", N=3, M=3)
    torch.testing.assert_close(sq.state_from_obs(x, z[:, :3]), torch.linalg.solve(sq.B, x.T).T,
                               rtol=0, atol=1e-12)


def test_pinv_cache_follows_in_place_updates():
    m = _model(observation="affine", N=3, M=3)
    x = torch.randn(2, 3, dtype=torch.float64)
    m.initial_state(x)
    with torch.no_grad():
        m.B.mul_(2.0)
    torch.testing.assert_close(m.observe(m.initial_state(x)), x, rtol=0, atol=1e-12)


def test_regularization_pulls_A_to_one():
    m = _model()
    expected = ((1 - m.A) ** 2).sum() + (m.W1 ** 2).sum() + (m.W2 ** 2).sum() + (m.h1 ** 2).sum() + (m.h2 ** 2).sum()
    torch.testing.assert_close(m.regularization(), expected)


def test_parameter_bound_bounds_every_jacobian():
    m = _model(L=40)
    z = 3 * torch.randn(500, 3, dtype=torch.float64)
    assert torch.linalg.matrix_norm(m.jacobian(z), ord=2).max() <= m.parameter_bound() + 1e-12


@pytest.mark.parametrize("kwargs,match", [
    (dict(obs_dim=3, latent_dim=2, hidden_dim=10), "M >= obs_dim"),
    (dict(obs_dim=3, latent_dim=3, hidden_dim=0), "hidden_dim must be a positive integer"),
    (dict(obs_dim=3, latent_dim=3, hidden_dim=10, observation="linear"), "valid: identity, affine"),
    (dict(obs_dim=3, latent_dim=3, hidden_dim=10, dtype="float16"), "dtype"),
])
def test_bad_arguments_say_what_to_do(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ShPLRNN(**kwargs)
