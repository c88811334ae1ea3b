"""``torch.autograd.gradcheck`` for every fast path, in float64.

The fast paths compute a forced rollout's loss gradient without autograd (the shPLRNN's kernel
forward and adjoint passes, its hand-written loss, regularizer and observation gradients) or through
a rewritten graph (the affine-forcing fold, the vmapped member stack). The equality tests compare
them with the plain autograd loop; here each is checked against finite differences of its own
loss, so a wrong gradient cannot hide behind a reference that shares its mistake.

A path that writes ``.grad`` instead of returning a differentiable loss is wrapped in an
``autograd.Function`` whose forward copies the inputs into the parameters and calls the path, and
whose backward returns the gradients the path wrote: gradcheck then compares those with central
differences of the loss the path returns.

The forcing signals of a model with a learned readout ``x = B z (+ c)`` (the shPLRNN's affine
observation, the LEM, RNN, LSTM, GRU) use ``B^+`` and ``c`` detached (docs/method.md section 3): the
training gradient with respect to ``B`` and ``c`` holds the forcing map fixed, which finite
differences of ``B`` and ``c`` cannot. There every other parameter is checked (``B`` and ``c`` held
fixed); the equality tests against the plain loop cover the readout.
"""

from __future__ import annotations

import pytest
import torch

from dsrecon.fast.affine_forcing import loss_and_grads as affine_loss_and_grads
from dsrecon.fast.ensemble import EnsembleShPLRNN, ensemble_loss_and_grads
from dsrecon.fast.fused_plrnn import FusedShPLRNNRollout
from dsrecon.fast.fused_plrnn import loss_and_grads as fused_loss_and_grads
from dsrecon.models import make_model
from dsrecon.models.plrnn import ShPLRNN
from dsrecon.vmap_stack import VmapStack
from kernel_marks import needs_kernel

N, B, T = 3, 2, 6  # observed dimension, windows, steps per window (T + 1 observations)
REG = 0.01




def _windows(seed: int, k: int | None = None) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    shape = (B, T + 1, N) if k is None else (k, B, T + 1, N)
    return torch.randn(shape, generator=g, dtype=torch.float64)


def _alphas(k: int | None = None) -> torch.Tensor:
    a = torch.linspace(0.05, 0.4, T + 1, dtype=torch.float64)  # varying, so a mixed-up step index shows
    return a if k is None else torch.stack([a * (1 + 0.5 * j) for j in range(k)])


class _WrittenGradLoss(torch.autograd.Function):
    """``loss(params)`` of a path that writes ``.grad``: forward copies ``params`` in and runs the path."""

    @staticmethod
    def forward(ctx, run, targets, *values):
        with torch.no_grad():
            for p, v in zip(targets, values):
                p.copy_(v)
                p.grad = None
        with torch.enable_grad():  # a Function's forward runs without grad mode; some paths use autograd inside
            loss = run()
        ctx.grads = [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in targets]
        return loss.detach().clone()

    @staticmethod
    def backward(ctx, g):
        return (None, None, *[g * d for d in ctx.grads])


READOUT = {"B", "c"}  # a learned readout, detached in the forcing signals


def _gradcheck_written(run, named_params, skip=READOUT) -> None:
    params = [p for name, p in named_params if name not in skip]
    values = [p.detach().clone().requires_grad_(True) for p in params]
    assert torch.autograd.gradcheck(lambda *v: _WrittenGradLoss.apply(run, params, *v), values,
                                    eps=1e-6, atol=1e-6, rtol=1e-5)


@needs_kernel
@pytest.mark.parametrize("clipped", [True, False])
def test_fused_rollout_function(clipped):
    """FusedShPLRNNRollout (the kernel's forward and adjoint passes as an autograd Function)."""
    g = torch.Generator().manual_seed(1)
    K, M, L = 2, 4, 5
    z1, A, W1, W2, h1, h2 = (0.5 * torch.randn(shape, generator=g, dtype=torch.float64).requires_grad_(True)
                             for shape in [(K, B, M), (K, M), (K, M, L), (K, L, M), (K, M), (K, L)])
    alpha = _alphas(K)[:, :T]
    Q = torch.diag(torch.tensor([0.0] * N + [1.0] * (M - N), dtype=torch.float64)).expand(K, M, M)
    c = torch.cat([_windows(2, K), torch.zeros(K, B, T + 1, M - N, dtype=torch.float64)], dim=-1)
    assert torch.autograd.gradcheck(
        lambda *w: FusedShPLRNNRollout.apply(*w, alpha, Q, c, clipped), (z1, A, W1, W2, h1, h2),
        eps=1e-6, atol=1e-6, rtol=1e-5)


@needs_kernel
@pytest.mark.parametrize("observation,M", [("identity", 3), ("identity", 5), ("affine", 2)])
def test_shplrnn_stack_gradients(observation, M):
    """EnsembleShPLRNN (hand-written loss, regularizer, initial-state and observation gradients), K = 2."""
    models = [ShPLRNN(N, M, 5, seed=s, dtype=torch.float64, observation=observation) for s in (3, 4)]
    ens = EnsembleShPLRNN(models)
    x, target = _windows(5, 2), _windows(6, 2)
    _gradcheck_written(lambda: ensemble_loss_and_grads(ens, x, _alphas(2), REG, target)[0].sum(),
                       ens.named_parameters())


@pytest.mark.parametrize("observation,M", [("identity", 5), ("affine", 2)])
def test_fused_backend_gradients(observation, M):
    """The trainer's "fused" backend for one shPLRNN (a one-model stack sharing its storage)."""
    model = ShPLRNN(N, M, 5, seed=7, dtype=torch.float64, observation=observation)
    x, target = _windows(8), _windows(9)
    _gradcheck_written(lambda: torch.tensor(fused_loss_and_grads(model, x, _alphas(), REG, target=target).loss,
                                            dtype=torch.float64), model.named_parameters())


FAMILIES = {
    "shplrnn": dict(latent_dim=4, hidden_dim=5),
    "alrnn": dict(latent_dim=5, n_relu=2),
    "lem": dict(hidden_dim=4),
    "rnn": dict(hidden_dim=4),
    "lstm": dict(hidden_dim=4),
    "gru": dict(hidden_dim=4),
}


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_affine_backend_gradients(name):
    """The "affine" backend (the forcing folded into one product per step) for every family."""
    model = make_model(name, obs_dim=N, seed=11, dtype=torch.float64, **FAMILIES[name])
    x, target = _windows(12), _windows(13)
    _gradcheck_written(lambda: torch.tensor(affine_loss_and_grads(model, x, _alphas(), REG, target=target).loss,
                                            dtype=torch.float64), model.named_parameters())


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_vmap_stack_gradients(name):
    """The generic member stack (autograd vmapped over the members), K = 2, every family."""
    models = [make_model(name, obs_dim=N, seed=s, dtype=torch.float64, **FAMILIES[name]) for s in (14, 15)]
    stack = VmapStack(models)
    x, target = _windows(16, 2), _windows(17, 2)
    _gradcheck_written(lambda: stack.loss_and_grads(x, _alphas(2), REG, target, need_z_hat=False)[0].sum(),
                       stack.named_parameters())
