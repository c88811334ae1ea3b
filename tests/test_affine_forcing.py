"""The affine-forcing rollout (``"affine"`` backend) equals the plain autograd loop for every model.

Reference: ``dsrecon.training.loss_and_grads`` (plain autograd through ``dsrecon.rollout.forced_rollout``).
Same function of the same inputs computed in another order: in float64 the two agree to rounding;
the training-speed issue's requirement is 1e-5 relative per parameter tensor, which we assert for
every model family and every forcing option.
"""

from __future__ import annotations

import pytest
import torch

from dsrecon.fast.affine_forcing import affine_forced_rollout, forcing_terms, has_affine_forcing
from dsrecon.fast.affine_forcing import loss_and_grads as affine_loss_and_grads
from dsrecon.forcing import make_forcing
from dsrecon.models import make_model
from dsrecon.models.base import Model
from dsrecon.rollout import forced_rollout
from dsrecon.training import TrainConfig, train
from dsrecon.training import loss_and_grads as plain_loss_and_grads
from reference_models import forcing_alphas

RTOL = 1e-5

MODELS = {
    "rnn": dict(name="rnn", hidden_dim=6),
    "lstm": dict(name="lstm", hidden_dim=5),
    "lstm_input_fed": dict(name="lstm", hidden_dim=5, input_fed=True),
    "lstm_learned_init": dict(name="lstm", hidden_dim=5, learned_init=True),
    "gru": dict(name="gru", hidden_dim=5),
    "lem": dict(name="lem", hidden_dim=5),
    "lem_input_fed": dict(name="lem", hidden_dim=5, input_fed=True),
    "shplrnn_affine": dict(name="shplrnn", latent_dim=4, hidden_dim=8, observation="affine"),
    "shplrnn_identity": dict(name="shplrnn", latent_dim=5, hidden_dim=8),
}


def _model(key: str):
    kw = dict(MODELS[key])
    return make_model(kw.pop("name"), obs_dim=3, seed=2, dtype=torch.float64, **kw)


def _grads(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("key", list(MODELS))
@pytest.mark.parametrize("kind", ["gtf", "agtf", "stf", "none", "tf"])
def test_affine_gradients_equal_plain(key, kind):
    model = _model(key)
    assert has_affine_forcing(model)
    x = torch.randn(4, 31, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    alphas = forcing_alphas(kind, 31, model, x)
    model.zero_grad()
    ref = plain_loss_and_grads(model, x, alphas, 1e-2)
    g_ref = _grads(model)
    model.zero_grad()
    res = affine_loss_and_grads(model, x, alphas, 1e-2)
    g = _grads(model)
    assert res.loss == pytest.approx(ref.loss, rel=1e-12)
    torch.testing.assert_close(res.z_hat, ref.z_hat, rtol=1e-12, atol=1e-12)
    assert set(g) == set(g_ref) and g_ref
    for name in g_ref:
        rel = float((g[name] - g_ref[name]).norm() / g_ref[name].norm().clamp_min(1e-300))
        assert rel < RTOL, (name, rel)


@pytest.mark.parametrize("key", ["lstm", "lem_input_fed", "shplrnn_affine"])
def test_forcing_terms_reproduce_state_from_obs(key):
    """The probed affine form c(x) + z Q equals state_from_obs at random states (the declaration holds)."""
    model = _model(key)
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 6, 3, generator=gen, dtype=torch.float64)
    z = torch.randn(12, model.state_dim, generator=gen, dtype=torch.float64)
    Q, c, _, _ = forcing_terms(model, x, torch.zeros(6, dtype=torch.float64))
    expected = model.state_from_obs(x.reshape(-1, 3), z)
    torch.testing.assert_close(c.reshape(-1, model.state_dim) + z @ Q, expected.detach(), rtol=1e-12, atol=1e-12)


def test_values_equal_forced_rollout():
    model = _model("gru")
    x = torch.randn(3, 21, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    ref, out = forced_rollout(model, x, 0.3), affine_forced_rollout(model, x, 0.3)
    torch.testing.assert_close(out.x_pred, ref.x_pred, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out.z, ref.z, rtol=1e-12, atol=1e-12)


class _NotDeclared(Model):
    """A contract model that does not declare affine forcing (its state_from_obs is nonlinear)."""

    name = "nonlinear_forcing"

    def __init__(self):
        super().__init__()
        self.obs_dim = self.state_dim = 2
        self.w = torch.nn.Parameter(torch.tensor([[0.9, 0.1], [-0.1, 0.9]], dtype=torch.float64))

    def initial_state(self, x0):
        return x0

    def step(self, z):
        return torch.tanh(z @ self.w.T)

    def observe(self, z):
        return z

    def state_from_obs(self, x, z):
        return x + 0.1 * z ** 2

    def config(self):
        return {}


def test_model_without_declaration_uses_the_plain_path():
    model = _NotDeclared()
    x = torch.randn(2, 11, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="affine_forcing"):
        affine_forced_rollout(model, x, 0.1)
    model.zero_grad()
    ref = plain_loss_and_grads(model, x, torch.full((11,), 0.3), 0.0)
    g_ref = model.w.grad.clone()
    model.zero_grad()
    res = affine_loss_and_grads(model, x, torch.full((11,), 0.3), 0.0)  # falls back, same numbers
    assert res.loss == ref.loss
    torch.testing.assert_close(model.w.grad, g_ref)


def test_train_auto_backend_equals_plain_for_an_lstm():
    """Two epochs of ``train`` with the default backend (affine for an LSTM) reproduce 'plain'."""
    series = torch.randn(300, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64).cumsum(0) * 0.05
    params = {}
    for backend in ("plain", "auto"):
        model = _model("lstm")
        cfg = TrainConfig(epochs=2, batches_per_epoch=3, batch_size=4, seq_len=20, backend=backend)
        train(model, series.numpy(), cfg, make_forcing("agtf"), progress=False)
        params[backend] = dict(model.named_parameters())
    for name, p in params["plain"].items():
        torch.testing.assert_close(params["auto"][name], p, rtol=1e-9, atol=1e-12, msg=name)
