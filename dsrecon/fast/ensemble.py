r"""Ensembles: K shPLRNNs of one shape (different seeds) trained in one batched computation.

Users train 10-20 seeds per configuration. Stacking the K models' parameters along a leading axis
lets one pass of the fused kernel (:mod:`dsrecon.fast.fused_plrnn`) serve all of them, so the
per-update fixed costs (Python, autograd, optimizer bookkeeping) are paid once instead of K times.
Nothing couples the models: the ensemble loss is the sum of the K per-model losses, so each
stacked slice receives exactly its own model's gradient, and RAdam (elementwise, no weight decay,
one shared step count and learning-rate schedule) updates each slice as it would update the model
alone. :func:`train_ensemble` therefore reproduces K calls of :func:`dsrecon.training.train` with the
same seeds (tests: to float tolerance), as long as every run stays finite (see its Notes).

What it buys (``benchmarks/results/train_speed_2026-11-23_kernel2.md``, M = 3, L = 50, B = 16,
T = 200, 2-core CPU): whole training loops of K = 10 seeds run at about 2x the model-updates per
second of one ``train()`` run on the fused path, and about 38x those of one run on the plain
autograd loop (the reference implementation's one model per process). Why not more on a CPU: one
fused single-model update costs ~1.2 ms, of which ~0.25 ms is kernel arithmetic and the rest fixed
per-update cost (Python, autograd, RAdam); batching pays the fixed part once, but per model the
kernel (~0.25 ms) and the tensor work around it that grows with K (windows, forced states, loss
and its gradient on (K, T, B, N) arrays, the per-epoch G diagnostic: ~0.35 ms) remain, so K = 10
costs ~6 ms instead of 10 x 1.2 ms. The C kernel runs the K models on parallel threads
(:func:`dsrecon.fast.set_kernel_threads`), which helps when the cores are otherwise idle. Moving
the loss into the kernel would cut the second part; on a GPU (the "torch" kernel) the fixed
per-step launch costs dominate and batching pays far more (not measured here: no GPU).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from dsrecon.fast import _kernels
from dsrecon.fast.fused_plrnn import FusedShPLRNNRollout
from dsrecon.models.plrnn import ShPLRNN

_STACKED = ("A", "W1", "W2", "h1", "h2")


class EnsembleShPLRNN(nn.Module):
    """K shPLRNNs with the same constructor arguments, parameters stacked as ``(K, ...)``.

    Parameters
    ----------
    models : sequence of ShPLRNN
        K >= 1 models with identical ``config()`` (shapes, clipping, observation, dtype). Their
        values are copied; :meth:`write_to` and :meth:`to_models` go back.

    Attributes
    ----------
    A (K, M), W1 (K, M, L), W2 (K, L, M), h1 (K, M), h2 (K, L) : nn.Parameter
    B (K, N, M) (affine observation) or C (K, M - N, N) (identity, M > N) : nn.Parameter
    """

    def __init__(self, models: Sequence[ShPLRNN]):
        super().__init__()
        models = list(models)
        if not models or not all(isinstance(m, ShPLRNN) for m in models):
            raise ValueError("EnsembleShPLRNN needs a non-empty sequence of ShPLRNN models, got "
                             f"{[type(m).__name__ for m in models]}")
        cfg = models[0].config()
        for k, m in enumerate(models[1:], 1):
            if m.config() != cfg:
                raise ValueError(f"all models of an ensemble need the same config; model 0 has {cfg}, "
                                 f"model {k} has {m.config()}")
        self.cfg = cfg
        self.obs_dim, self.state_dim, self.hidden_dim = cfg["obs_dim"], cfg["latent_dim"], cfg["hidden_dim"]
        self.clipped, self.observation = cfg["clipped"], cfg["observation"]
        names = list(_STACKED)
        if self.observation == "affine":
            names.append("B")
        elif self.state_dim > self.obs_dim:
            names.append("C")
        self._names = names
        for name in names:
            stacked = torch.stack([getattr(m, name).detach() for m in models]).clone()
            setattr(self, name, nn.Parameter(stacked))

    @property
    def K(self) -> int:
        return self.A.shape[0]

    # ----------------------------------------------------------------- splitting back
    @torch.no_grad()
    def write_to(self, models: Sequence[ShPLRNN]) -> None:
        """Copy model k's slice into ``models[k]`` (in place; their ``.grad`` is left alone)."""
        if len(models) != self.K:
            raise ValueError(f"need {self.K} models to write to, got {len(models)}")
        for k, m in enumerate(models):
            for name in self._names:
                getattr(m, name).copy_(getattr(self, name)[k])

    def to_models(self) -> list[ShPLRNN]:
        """K independent ShPLRNN models holding copies of the slices (for evaluation, checkpoints)."""
        models = [ShPLRNN(**self.cfg) for _ in range(self.K)]
        self.write_to(models)
        return models

    # ----------------------------------------------------------------- batched contract
    def regularization(self) -> torch.Tensor:
        """Per-model ``||1 - A||^2 + ||W1||^2 + ||W2||^2 + ||h1||^2 + ||h2||^2``, shape ``(K,)``."""
        return (((1 - self.A) ** 2).sum(1) + (self.W1 ** 2).sum((1, 2)) + (self.W2 ** 2).sum((1, 2))
                + (self.h1 ** 2).sum(1) + (self.h2 ** 2).sum(1))

    def _pinv(self) -> torch.Tensor:
        return torch.linalg.pinv(self.B.detach())  # (K, M, N)

    def initial_state(self, x0: torch.Tensor) -> torch.Tensor:
        """``(K, B, N) -> (K, B, M)``, as :meth:`ShPLRNN.initial_state` per model."""
        if self.observation == "affine":
            return x0 @ self._pinv().transpose(1, 2)  # (K, B, M)
        if self.state_dim == self.obs_dim:
            return x0
        return torch.cat([x0, x0 @ self.C.transpose(1, 2)], dim=-1)  # (K, B, M)

    def observe(self, z: torch.Tensor) -> torch.Tensor:
        """``(K, S, M) -> (K, S, N)``."""
        if self.observation == "affine":
            return z @ self.B.transpose(1, 2)  # (K, S, N)
        return z[..., : self.obs_dim]

    def forcing_terms(self, x: torch.Tensor, alphas: torch.Tensor):
        """Detached ``state_from_obs(x, z) = c(x) + z Q`` per model (see ``fused_plrnn.forcing_terms``).

        Parameters
        ----------
        x : (K, B, T + 1, N); alphas : (K, T + 1)

        Returns
        -------
        Q (K, M, M), c (K, B, T + 1, M), a (K, T), ac (K, T, B, M)
        """
        K, Bsz, n, N = x.shape
        M = self.state_dim
        with torch.no_grad():
            if self.observation == "affine":
                P = self._pinv()  # (K, M, N)
                c = (x.reshape(K, Bsz * n, N) @ P.transpose(1, 2)).reshape(K, Bsz, n, M)  # (K, B, T+1, M)
                eye = torch.eye(M, dtype=x.dtype, device=x.device)
                Q = eye - self.B.detach().transpose(1, 2) @ P.transpose(1, 2)  # (K, M, M)
            else:
                c = torch.cat([x, x.new_zeros(K, Bsz, n, M - N)], dim=-1)  # (K, B, T+1, M)
                q = torch.cat([x.new_zeros(N), x.new_ones(M - N)])  # (M,)
                Q = torch.diag(q).expand(K, M, M).contiguous()  # (K, M, M)
            a = alphas[:, :-1].to(dtype=x.dtype, device=x.device)  # (K, T)
            ac = a[:, :, None, None] * c[:, :, :-1].transpose(1, 2)  # (K, T, B, M)
        return Q, c, a, ac


def ensemble_loss_and_grads(ens: EnsembleShPLRNN, x: torch.Tensor, alphas: torch.Tensor, reg_weight: float,
                            target: torch.Tensor | None = None, *, backend: str = "auto"):
    """Per-model forced-rollout losses of one batch each, gradients into the stacked ``.grad``.

    Parameters
    ----------
    ens : EnsembleShPLRNN
    x : torch.Tensor, shape ``(K, B, T + 1, N)``
        Model k's windows in ``x[k]`` (inputs for the initial state and the forcing).
    alphas : torch.Tensor, shape ``(K, T + 1)``
        Model k's forcing strengths per window step.
    reg_weight : float
    target : torch.Tensor, shape ``(K, B, T + 1, N)``, optional
        Clean windows for the loss (default ``x``).

    Returns
    -------
    loss (K,), mse (K,) : torch.Tensor, detached
    z_hat : torch.Tensor, shape ``(K, B, T + 1, M)``, detached data-inferred states
    """
    if x.ndim != 4 or x.shape[0] != ens.K or x.shape[-1] != ens.obs_dim or x.shape[2] < 2:
        raise ValueError(f"x must have shape (K, B, T + 1, N) with K = {ens.K}, N = {ens.obs_dim}, "
                         f"T >= 1, got {tuple(x.shape)}")
    alphas = torch.as_tensor(alphas, dtype=torch.float64).reshape(ens.K, -1)
    if alphas.shape[1] != x.shape[2]:
        raise ValueError(f"alphas must have shape (K, T + 1) = ({ens.K}, {x.shape[2]}), got {tuple(alphas.shape)}")
    K, Bsz, n, N = x.shape
    backend = _kernels.resolve_backend(backend, x.device)
    Q, c, a, ac = ens.forcing_terms(x, alphas)
    z1 = ens.initial_state(x[:, :, 0])  # (K, B, M)
    Z = FusedShPLRNNRollout.apply(z1, ens.A, ens.W1, ens.W2, ens.h1, ens.h2, a, Q, ac,
                                  ens.clipped, backend)  # (K, T, B, M)
    x_pred = ens.observe(Z.reshape(K, (n - 1) * Bsz, -1)).reshape(K, n - 1, Bsz, N)  # (K, T, B, N)
    target = x if target is None else target
    mse = torch.mean((x_pred - target[:, :, 1:].transpose(1, 2)) ** 2, dim=(1, 2, 3))  # (K,)
    loss = mse + reg_weight * ens.regularization() if reg_weight else mse  # (K,)
    finite = torch.isfinite(loss)
    if bool(finite.any()):
        torch.where(finite, loss, torch.zeros_like(loss)).sum().backward()
    with torch.no_grad():
        z_all = torch.cat([z1.unsqueeze(1), Z], dim=1).transpose(1, 2)  # (K, B, T + 1, M)
        M = Q.shape[-1]
        z_hat = c + torch.bmm(z_all.reshape(K, Bsz * n, M), Q).reshape(K, Bsz, n, M)  # (K, B, T + 1, M)
    return loss.detach(), mse.detach(), z_hat
