"""RNN/LSTM/GRU baselines: equal to PyTorch's reference cells, counts, Jacobian, forcing, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import dsrecon
from dsrecon.models.baselines import GRU, LSTM, RNN

F64 = torch.float64


def torch_cell(model):
    """PyTorch's own cell carrying the model's weights (input weights zero when autonomous)."""
    H, N = model.hidden_dim, model.obs_dim
    kind = {"rnn": nn.RNNCell, "lstm": nn.LSTMCell, "gru": nn.GRUCell}[model.name]
    cell = kind(N, H, dtype=F64)
    with torch.no_grad():
        cell.weight_hh.copy_(model.W)
        cell.weight_ih.copy_(model.V if model.input_fed else torch.zeros_like(cell.weight_ih))
        cell.bias_ih.zero_()
        if model.name == "gru":  # PyTorch: n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
            cell.bias_ih.copy_(model.b)
            cell.bias_hh.copy_(torch.cat([torch.zeros(2 * H, dtype=F64), model.b_hn]))
        else:
            cell.bias_hh.copy_(model.b)
    return cell


def run_torch_cell(model, cell, h, c, u):
    if model.name == "lstm":
        return cell(u, (h, c))
    return cell(u, h), c


@pytest.mark.parametrize("cls", [RNN, LSTM, GRU])
@pytest.mark.parametrize("input_fed", [False, True])
def test_step_equals_pytorch_cell(cls, input_fed):
    m = cls(3, 9, input_fed=input_fed, seed=1, dtype=F64)
    cell = torch_cell(m)
    s = torch.randn(6, m.state_dim, dtype=F64)
    n_in = 3 if input_fed else 0
    u = s[:, :3] if input_fed else torch.zeros(6, 3, dtype=F64)
    h, c = s[:, n_in:n_in + 9], s[:, n_in + 9:]
    h_ref, c_ref = run_torch_cell(m, cell, h, c, u)
    out = m.step(s)
    torch.testing.assert_close(out[:, n_in:n_in + 9], h_ref, rtol=0, atol=1e-13)
    if cls is LSTM:
        torch.testing.assert_close(out[:, n_in + 9:], c_ref, rtol=0, atol=1e-13)
    if input_fed:
        torch.testing.assert_close(out[:, :3], h_ref @ m.B.T + m.c, rtol=0, atol=1e-13)


@pytest.mark.parametrize("cls", [RNN, LSTM, GRU])
@pytest.mark.parametrize("input_fed", [False, True])
def test_autograd_jacobian_matches_finite_differences(cls, input_fed):
    m = cls(3, 6, input_fed=input_fed, seed=2, dtype=F64)
    z = torch.randn(3, m.state_dim, dtype=F64)
    eps = 1e-6
    J_fd = torch.empty(3, m.state_dim, m.state_dim, dtype=F64)
    with torch.no_grad():
        for j in range(m.state_dim):
            e = torch.zeros(m.state_dim, dtype=F64)
            e[j] = eps
            J_fd[:, :, j] = (m.step(z + e) - m.step(z - e)) / (2 * eps)
    torch.testing.assert_close(m.jacobian(z), J_fd, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("cls,gates,biases", [(RNN, 1, 1), (LSTM, 4, 4), (GRU, 3, 4)])
@pytest.mark.parametrize("H,N", [(1, 1), (10, 3), (35, 5)])
def test_parameter_counts(cls, gates, biases, H, N):
    """gates H^2 + (biases) H + readout HN + N; input-fed adds gates HN."""
    readout = H * N + N
    assert cls(N, H, seed=0).n_params == gates * H * H + biases * H + readout
    assert cls(N, H, input_fed=True, seed=0).n_params == gates * H * (H + N) + biases * H + readout


def test_input_fed_lstm_count_matches_gtf_paper():
    """Hess et al. (2023), Table 1: LSTM with H = 35 on the 5-d ECG has 5920 parameters."""
    assert LSTM(5, 35, input_fed=True, seed=0).n_params == 5920


@pytest.mark.parametrize("cls", [RNN, LSTM, GRU])
def test_forcing_replaces_the_read_out_part_of_h_only(cls):
    m = cls(3, 8, seed=3, dtype=F64)
    x = torch.randn(4, 3, dtype=F64)
    s = torch.randn(4, m.state_dim, dtype=F64)
    s_hat = m.state_from_obs(x, s)
    torch.testing.assert_close(m.observe(s_hat), x)  # B B^+ = I for full row rank B
    torch.testing.assert_close(s_hat[:, 8:], s[:, 8:], rtol=0, atol=0)  # LSTM cell c never forced
    s0 = m.initial_state(x)
    torch.testing.assert_close(m.observe(s0), x)
    assert torch.all(s0[:, 8:] == 0)


@pytest.mark.parametrize("cls", [RNN, LSTM, GRU])
def test_input_fed_forcing_with_alpha_one_is_feeding_the_observation(cls):
    m = cls(3, 7, input_fed=True, seed=4, dtype=F64)
    s = m.step(m.initial_state(torch.randn(5, 3, dtype=F64)))
    x = torch.randn(5, 3, dtype=F64)
    s_forced = s + 1.0 * (m.state_from_obs(x, s) - s)
    h_ref, _ = run_torch_cell(m, torch_cell(m), s[:, 3:10], s[:, 10:], x)
    torch.testing.assert_close(m.step(s_forced)[:, 3:10], h_ref, rtol=0, atol=1e-13)


@pytest.mark.parametrize("name", ["rnn", "lstm", "gru"])
def test_config_rebuilds_the_same_map(name):
    m = dsrecon.make_model(name, obs_dim=2, hidden_dim=5, input_fed=True, seed=5)
    rebuilt = dsrecon.make_model(name, **m.config())
    rebuilt.load_state_dict(m.state_dict())
    s = torch.randn(3, m.state_dim)
    torch.testing.assert_close(rebuilt.step(s), m.step(s), rtol=0, atol=0)
    assert m.regularization().item() == 0.0


def test_lstm_learned_initial_cell_state():
    m = LSTM(3, 4, learned_init=True, seed=0)
    assert m.n_params == LSTM(3, 4, seed=0).n_params + 4 * 3


@pytest.mark.parametrize("kwargs,match", [
    (dict(obs_dim=3, hidden_dim=0), "hidden_dim must be a positive integer"),
    (dict(obs_dim=2.5, hidden_dim=4), "obs_dim must be a positive integer"),
    (dict(obs_dim=3, hidden_dim=4, learned_init=True), "learned_init=True needs a state block"),
    (dict(obs_dim=3, hidden_dim=4, seed=1, generator=torch.Generator()), "either generator= or seed="),
])
def test_bad_arguments_give_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RNN(**kwargs)
