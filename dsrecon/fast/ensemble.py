r"""Ensembles: K shPLRNNs of one shape (different seeds) trained in one batched computation.

Users train 10-20 seeds per configuration. Stacking the K models' parameters along a leading axis
lets one call of the C kernel (:mod:`dsrecon.fast._kernels`) serve all of them, so the
per-update fixed costs (Python, autograd, optimizer bookkeeping) are paid once instead of K times.
Nothing couples the models: the ensemble loss is the sum of the K per-model losses, so each
stacked slice receives exactly its own model's gradient, and RAdam (elementwise, no weight decay,
one shared step count and learning-rate schedule) updates each slice as it would update the model
alone. :func:`dsrecon.train` of an ensemble therefore reproduces K separate calls with the
same seeds bit for bit, at any position and ensemble size, as long as every run stays finite (see its
Notes): every batched product over the member axis is computed per member (:func:`per_member`).

The per-update fixed cost is paid once per ensemble and the kernel's arithmetic once per member,
so the gain over K separate runs grows with K and falls as the fixed cost falls; the measured
figures are in ``docs/performance.md``. Where the kernel cannot run these members
(:meth:`EnsembleShPLRNN.kernel_runs`: no C compiler, tensors off the CPU, M > 64),
:func:`dsrecon.stacking.stack_members` takes the generic stack instead.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from dsrecon.fast import _kernels
from dsrecon.fast.jacobian_norms import stacked_jacobian_norms, stacked_jacobians
from dsrecon.fast.members import per_member, per_member_grad_norms, per_member_params_finite
from dsrecon.models.plrnn import ShPLRNN

_STACKED = ("A", "W1", "W2", "h1", "h2")


class EnsembleShPLRNN(nn.Module):
    """K shPLRNNs with the same constructor arguments, parameters stacked as ``(K, ...)``.

    Parameters
    ----------
    models : sequence of ShPLRNN
        K >= 1 models with identical ``config()`` (shapes, clipping, observation, dtype). Their
        values are copied; :meth:`write_to` and :meth:`to_models` go back.
    share_storage : bool
        With one model: the stacked parameters are ``(1, ...)`` views of the model's own (no copy),
        so the model's single-run training can use :func:`ensemble_loss_and_grads`.

    Attributes
    ----------
    A (K, M), W1 (K, M, L), W2 (K, L, M), h1 (K, M), h2 (K, L) : nn.Parameter
    B (K, N, M) (affine observation) or C (K, M - N, N) (identity, M > N) : nn.Parameter
    """

    def __init__(self, models: Sequence[ShPLRNN], *, share_storage: bool = False):
        super().__init__()
        models = list(models)
        if share_storage and len(models) != 1:
            raise ValueError(f"share_storage needs exactly one model, got {len(models)}")
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
            if share_storage:
                stacked = getattr(models[0], name).detach().unsqueeze(0)  # a view: same storage
            else:
                stacked = torch.stack([getattr(m, name).detach() for m in models]).clone()
            setattr(self, name, nn.Parameter(stacked))

    @staticmethod
    def kernel_runs(models: Sequence[ShPLRNN]) -> bool:
        """Whether the C kernel can train these members here (CPU, float32/float64, M <= 64, and it
        builds: without a compiler :func:`dsrecon.fast._kernels.available` warns once per process)."""
        p = models[0].A
        return _kernels.usable(p.device, p.dtype, models[0].state_dim, stacklevel=4)

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
        # elementwise and sums over each member's own trailing axes: no per_member needed
        # (tests/test_member_identity.py compares the loss history bit for bit)
        return (((1 - self.A) ** 2).sum(1) + (self.W1 ** 2).sum((1, 2)) + (self.W2 ** 2).sum((1, 2))
                + (self.h1 ** 2).sum(1) + (self.h2 ** 2).sum(1))

    def _pinv(self) -> torch.Tensor:
        return per_member(torch.linalg.pinv, self.B.detach())  # (K, M, N)

    def initial_state(self, x0: torch.Tensor) -> torch.Tensor:
        """``(K, B, N) -> (K, B, M)``, as :meth:`ShPLRNN.initial_state` per model."""
        if self.observation == "affine":
            return per_member(lambda x, P: x @ P.transpose(1, 2), x0, self._pinv())  # (K, B, M)
        if self.state_dim == self.obs_dim:
            return x0
        return torch.cat([x0, per_member(lambda x, C: x @ C.transpose(1, 2), x0, self.C)], dim=-1)  # (K, B, M)

    def observe(self, z: torch.Tensor) -> torch.Tensor:
        """``(K, S, M) -> (K, S, N)``."""
        if self.observation == "affine":
            return per_member(lambda z, B: z @ B.transpose(1, 2), z, self.B)  # (K, S, N)
        return z[..., : self.obs_dim]

    def jacobian(self, z: torch.Tensor) -> torch.Tensor:
        """Per-model analytic Jacobians at states ``z``: ``(K, S, M) -> (K, S, M, M)`` (as :meth:`ShPLRNN.jacobian`)."""
        return stacked_jacobians(self.A, self.W1, self.W2, self.h2, self.clipped, z)

    @torch.no_grad()
    def growth_bounds(self, z_hat: torch.Tensor, estimator: str = "geometric_mean") -> torch.Tensor:
        """:func:`dsrecon.forcing.growth_bound` of the K models at once: ``z_hat (K, B, T, M) -> (K,)`` float64."""
        from dsrecon.forcing import GROWTH_ESTIMATORS, reduce_norms

        if estimator not in GROWTH_ESTIMATORS:
            raise ValueError(f"unknown growth estimator {estimator!r}; valid: {', '.join(GROWTH_ESTIMATORS)}")
        if estimator == "parameter_bound":  # max|A_i| + ||W1||_2 ||W2||_2 per model
            return per_member(lambda A, W1, W2: A.abs().amax(1) + torch.linalg.matrix_norm(W1, ord=2)
                              * torch.linalg.matrix_norm(W2, ord=2), self.A, self.W1, self.W2).double()
        K, Bsz, n, M = z_hat.shape
        z = z_hat.reshape(K, Bsz * n, M)
        if estimator == "mean_jacobian":
            return per_member(lambda J: torch.linalg.matrix_norm(J.mean(1), ord=2), self.jacobian(z)).double()
        norms = stacked_jacobian_norms(self.A, self.W1, self.W2, self.h2, self.clipped, z)  # (K, B * n)
        return reduce_norms(norms.reshape(K, Bsz, n), estimator)

    # ----------------------------------------------------------------- the member-stack seam (dsrecon.stacking)
    def loss_and_grads(self, x: torch.Tensor, alphas: torch.Tensor, reg_weight: float,
                       target: torch.Tensor | None = None, *, need_z_hat: bool = True):
        """:func:`ensemble_loss_and_grads`: ``(K,) loss, (K,) mse, z_hat``."""
        return ensemble_loss_and_grads(self, x, alphas, reg_weight, target, need_z_hat=need_z_hat)

    def grad_norms(self) -> torch.Tensor:
        """``(K,)`` float64 norm of each member's gradient."""
        return per_member_grad_norms(list(self.parameters()), self.K)

    def params_finite(self):
        """``(K,)`` bool NumPy array: every parameter of member k is finite."""
        return per_member_params_finite(list(self.parameters()), self.K)

    def forcing_terms(self, x: torch.Tensor, alphas: torch.Tensor):
        """Detached ``state_from_obs(x, z) = c(x) + z Q`` per model (see ``fused_plrnn.forcing_terms``).

        Parameters
        ----------
        x : (K, B, T + 1, N); alphas : (K, T + 1)

        Returns
        -------
        Q (K, M, M), c (K, B, T + 1, M), a (K, T): the kernel forms ``a_t c_t`` itself
        """
        K, Bsz, n, N = x.shape
        M = self.state_dim
        with torch.no_grad():
            if self.observation == "affine":
                P = self._pinv()  # (K, M, N)
                c = per_member(lambda x, P: x @ P.transpose(1, 2), x.reshape(K, Bsz * n, N), P)
                c = c.reshape(K, Bsz, n, M)  # (K, B, T+1, M)
                eye = torch.eye(M, dtype=x.dtype, device=x.device)
                Q = per_member(lambda B, P: eye - B.transpose(1, 2) @ P.transpose(1, 2), self.B.detach(), P)  # (K, M, M)
            else:
                c = x if M == N else torch.cat([x, x.new_zeros(K, Bsz, n, M - N)], dim=-1)  # (K, B, T+1, M)
                q = torch.cat([x.new_zeros(N), x.new_ones(M - N)])  # (M,)
                Q = torch.diag(q).expand(K, M, M).contiguous()  # (K, M, M)
            a = alphas[:, :-1].to(dtype=x.dtype, device=x.device)  # (K, T)
        return Q, c, a


def ensemble_loss_and_grads(ens: EnsembleShPLRNN, x: torch.Tensor, alphas: torch.Tensor, reg_weight: float,
                            target: torch.Tensor | None = None, *, need_z_hat: bool = True):
    """Per-model forced-rollout losses of one batch each, gradients into the stacked ``.grad``.

    Runs in the C kernel (CPU tensors, float32/float64, M <= 64; ``RuntimeError`` without a C
    compiler). No autograd graph: the loss gradient ``dL/dZ`` is formed directly (``2 (x_pred - x) / (T B N)``
    through the observation), the kernel's adjoint pass returns the weight gradients, and the
    gradients of the regularizer and of the observation/initial-state maps (``B``, ``C``) are
    written out analytically. Equal to ``loss.sum().backward()`` through
    :class:`~dsrecon.fast.fused_plrnn.FusedShPLRNNRollout` (tests), without its per-update graph cost.
    Gradients are added to existing ``.grad`` tensors, as ``backward`` does.

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
    need_z_hat : bool
        Return the data-inferred states (an adaptive forcing or the growth diagnostic needs them);
        False skips that product and returns None in its place.

    Returns
    -------
    loss (K,), mse (K,) : torch.Tensor, detached
    z_hat : torch.Tensor, shape ``(K, B, T + 1, M)``, detached data-inferred states, or None

    Notes
    -----
    A model whose loss is not finite receives a zero loss gradient (its weight gradients may still
    hold NaN from a non-finite rollout; the trainer discards that model's update).
    """
    if x.ndim != 4 or x.shape[0] != ens.K or x.shape[-1] != ens.obs_dim or x.shape[2] < 2:
        raise ValueError(f"x must have shape (K, B, T + 1, N) with K = {ens.K}, N = {ens.obs_dim}, "
                         f"T >= 1, got {tuple(x.shape)}")
    alphas = torch.as_tensor(alphas, dtype=torch.float64).reshape(ens.K, -1)
    if alphas.shape[1] != x.shape[2]:
        raise ValueError(f"alphas must have shape (K, T + 1) = ({ens.K}, {x.shape[2]}), got {tuple(alphas.shape)}")
    K, Bsz, n, N = x.shape
    T, M = n - 1, ens.state_dim
    target = x if target is None else target
    Q, c, a = ens.forcing_terms(x, alphas)
    with torch.no_grad():
        x0 = x[:, :, 0]  # (K, B, N)
        z1 = ens.initial_state(x0).contiguous()  # (K, B, M)
        weights = [t.detach().contiguous() for t in (ens.A, ens.W1, ens.W2.transpose(1, 2), ens.h1, ens.h2)]
        forcing = [t.contiguous() for t in (a, Q, c)]
        scale = 2.0 / (T * Bsz * N)  # dMSE/dx_pred = scale * residual
        # the C kernel runs forward, loss and backward of the identity observation in one call
        one_call = ens.observation == "identity"
        if one_call:
            Zt, Z, sse, *kernel_grads = _kernels.identity_step(z1, *weights, ens.clipped, *forcing,
                                                               target.contiguous(), scale)
            mse, d_obs = (sse / (T * Bsz * N)).to(x.dtype), None
        else:
            Zt, Z = _kernels.forward(z1, *weights, ens.clipped, *forcing)  # (K, B, T, M) each
            mse, G, d_obs = _loss_gradient(ens, Z, target, scale)
        loss = mse + reg_weight * ens.regularization() if reg_weight else mse  # (K,)
        finite = torch.isfinite(loss)  # (K,)
        if not bool(finite.all()):  # no loss gradient for a model whose loss is not finite
            if one_call:  # the kernel dropped it only where the squared error itself is not finite
                _, G, _ = _loss_gradient(ens, Z, target, scale)
                one_call = False
            G = torch.where(finite[:, None, None, None], G, 0.0)
            if ens.observation == "affine":
                d_obs = torch.where(finite[:, None, None], d_obs, 0.0)
        if not one_call:
            kernel_grads = _kernels.backward(G.contiguous(), Zt, *weights, ens.clipped, *forcing[:2])
        dz1, dA, dW1, dW2t, dh1, dh2 = kernel_grads
        grads = {"A": dA, "W1": dW1, "W2": dW2t.transpose(1, 2), "h1": dh1, "h2": dh2}
        if reg_weight:  # d/dp of ||1 - A||^2 + sum ||p||^2, for the models with a finite loss
            w = (2.0 * reg_weight) * finite.to(x.dtype)  # (K,)
            grads["A"] = grads["A"] - w[:, None] * (1 - ens.A)
            for name in ("W1", "W2", "h1", "h2"):
                p = getattr(ens, name)
                grads[name] = grads[name] + w.reshape(-1, *[1] * (p.ndim - 1)) * p
        if ens.observation == "affine":
            grads["B"] = d_obs  # the initial state uses a detached pseudo-inverse of B
        elif M > N:
            grads["C"] = per_member(lambda d, x: torch.bmm(d[:, :, N:].transpose(1, 2), x), dz1, x0)  # (K, M - N, N)
        for name, g in grads.items():
            p = getattr(ens, name)
            if p.grad is None:
                p.grad = g.contiguous()
            else:
                p.grad += g
        z_hat = None
        if need_z_hat and ens.observation == "identity" and bool(torch.isfinite(Z.sum())):  # finite sum: all finite
            # c + z Q with Q = diag(0 observed, 1 latent) and c = [x, 0]: the data, the latent states past N
            z_hat = c if M == N else torch.cat([x, torch.cat([z1.unsqueeze(2), Z], dim=2)[..., N:]], dim=-1)
        elif need_z_hat:
            z_all = torch.cat([z1.unsqueeze(2), Z], dim=2)  # (K, B, T + 1, M)
            z_hat = c + per_member(torch.bmm, z_all.reshape(K, Bsz * n, M), Q).reshape(K, Bsz, n, M)  # (K, B, T + 1, M)
    return loss.detach(), mse.detach(), z_hat


def _loss_gradient(ens: EnsembleShPLRNN, Z: torch.Tensor, target: torch.Tensor, scale: float):
    """MSE of the predictions from the unforced states and its gradients.

    ``Z (K, B, T, M)``, ``target (K, B, T + 1, N)``; returns ``mse (K,)``, ``G = dL/dZ (K, B, T, M)``
    (``scale`` times the residual, through the observation) and, for the affine observation,
    ``dL/dB (K, N, M)`` (else None).
    """
    K, Bsz, T, M = Z.shape
    N = target.shape[-1]
    resid = ens.observe(Z.reshape(K, Bsz * T, M)).reshape(K, Bsz, T, N) - target[:, :, 1:]  # (K, B, T, N)
    mse = resid.pow(2).mean(dim=(1, 2, 3))  # (K,)
    g_pred = resid * scale  # (K, B, T, N)
    d_obs = None
    if ens.observation == "affine":
        g = g_pred.reshape(K, Bsz * T, N)
        G = per_member(torch.bmm, g, ens.B.detach()).reshape(K, Bsz, T, M)
        d_obs = per_member(lambda g, z: torch.bmm(g.transpose(1, 2), z), g, Z.reshape(K, Bsz * T, M))  # dB
    elif M > N:
        G = torch.cat([g_pred, g_pred.new_zeros(K, Bsz, T, M - N)], dim=-1)
    else:
        G = g_pred
    return mse, G, d_obs
