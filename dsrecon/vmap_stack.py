r"""The generic member stack: K models of any family trained with autograd batched over a member axis.

Every registered model without a hand-written kernel trains in an ensemble through this stack
(:mod:`dsrecon.stacking`). The members' parameters are stacked as ``(K, ...)`` leaves; one update
runs the forced rollout of one member, written against the model contract, under
``torch.func.vmap`` over the member axis with ``torch.func.functional_call`` (each member sees its
own parameter slice, windows and alphas), so every operation of the rollout runs once for all K
members instead of once per member. The backward pass is ordinary autograd through the batched
operations: the members' losses are summed and, since no operation mixes members, each slice of
the stacked gradient is its own member's gradient.

The rollout is :func:`dsrecon.fast.affine_forcing.affine_forced_rollout`'s for models that declare
``affine_forcing`` (the forcing folded into one product per step,
``z~_t = z_t F_t + alpha_t c(x_t)``, ``F_t = (1 - alpha_t) I + alpha_t Q``) and
:func:`dsrecon.rollout.forced_rollout`'s otherwise (``z~_t = z_t + alpha_t (state_from_obs(x_t, z_t) - z_t)``),
without their data-dependent shortcuts (a vmapped function cannot branch on a member's alpha):
alpha = 0 multiplies by the identity, which is exact. Same objective as the one-model trainer
(MSE of the unforced predictions plus ``reg_weight * regularization()``). A model trained alone with
``backend="auto"`` runs as a one-member stack (:func:`one_model_loss_and_grads`), and the batched
kernels give a member's numbers independently of its position and of the member count, so a member
equals its separate run bit for bit (tests/test_member_identity.py; not the GRU, one of whose
batched gradients rounds differently for one member than for several).

Device-agnostic: the stack lives on the members' device (CPU or CUDA).
"""

from __future__ import annotations

import copy
import math
import weakref
from typing import Sequence

import torch
from torch import nn
from torch.func import functional_call, vmap

from dsrecon.fast.affine_forcing import check_alphas, forcing_terms
from dsrecon.fast.members import per_member_grad_norms, per_member_params_finite
from dsrecon.forcing import growth_bound
from dsrecon.loss import StepResult
from dsrecon.models.base import Model
from dsrecon.rollout import check_windows


def member_rollout_loss(model: Model, x: torch.Tensor, alphas: torch.Tensor, target: torch.Tensor,
                        reg_weight: float, need_z_hat: bool):
    """Forced-rollout loss of one member on its windows, written to run under ``vmap``.

    Parameters
    ----------
    model : Model
        The member (inside ``functional_call``: the template holding the member's slice).
    x, target : torch.Tensor, shape ``(B, T + 1, N)``
        Windows feeding the initial state and the forcing; clean windows for the loss.
    alphas : torch.Tensor, shape ``(T + 1,)``, float64
    reg_weight : float
    need_z_hat : bool
        Also return the detached data-inferred states ``(B, T + 1, M)`` (else a 0-d zero).

    Returns
    -------
    loss, mse : 0-d tensors; z_hat
    """
    Bsz, n, N = x.shape
    M = model.state_dim
    z1 = model.initial_state(x[:, 0])  # (B, M)
    z, states = z1, []
    if model.affine_forcing:
        Q, c, a, ac = forcing_terms(model, x, alphas)  # (M, M), (B, T+1, M), (T,), (T, B, M)
        eye = torch.eye(M, dtype=x.dtype, device=x.device)
        F = (1 - a)[:, None, None] * eye + a[:, None, None] * Q  # (T, M, M)
        for t in range(n - 1):
            z = model.step(torch.addmm(ac[t], z, F[t]))  # (B, M)
            states.append(z)
    else:
        a = alphas.to(dtype=x.dtype, device=x.device)  # (T + 1,)
        z_hats = [model.state_from_obs(x[:, 0], z1).detach()]
        z_tilde = z1 + a[0] * (z_hats[0] - z1)
        for t in range(1, n):
            z = model.step(z_tilde)  # (B, M)
            states.append(z)
            z_hat_t = model.state_from_obs(x[:, t], z)  # (B, M)
            z_hats.append(z_hat_t.detach())
            z_tilde = z + a[t] * (z_hat_t - z)
    Z = torch.stack(states, dim=1)  # (B, T, M)
    x_pred = model.observe(Z.reshape(-1, M)).reshape(Bsz, n - 1, N)  # (B, T, N)
    mse = torch.mean((x_pred - target[:, 1:]) ** 2)
    loss = mse + reg_weight * model.regularization() if reg_weight else mse
    z_hat = x.new_zeros(())
    if need_z_hat:
        with torch.no_grad():
            if model.affine_forcing:
                z_all = torch.cat([z1.detach().unsqueeze(1), Z.detach()], dim=1)  # (B, T + 1, M)
                z_hat = c + z_all @ Q  # (B, T + 1, M)
            else:
                z_hat = torch.stack(z_hats, dim=1)  # (B, T + 1, M)
    return loss, mse, z_hat


class _MemberLoss(nn.Module):
    """The template model with :func:`member_rollout_loss` as its forward (for ``functional_call``)."""

    def __init__(self, model: Model, reg_weight: float, need_z_hat: bool):
        super().__init__()
        self.model = model
        self.reg_weight, self.need_z_hat = reg_weight, need_z_hat

    def forward(self, x, alphas, target):
        return member_rollout_loss(self.model, x, alphas, target, self.reg_weight, self.need_z_hat)


def _flat(name: str) -> str:
    return name.replace(".", "__")


class VmapStack(nn.Module):
    """K models of one class and config with their parameters stacked as ``(K, ...)``.

    Parameters
    ----------
    models : sequence of Model
        The members (same class and ``config()``); their values are copied, :meth:`write_to` goes back.
    share_storage : bool
        With one model: the stacked parameters are ``(1, ...)`` views of the model's own (no copy),
        so the model's single-run training can use the stack (:func:`one_model_loss_and_grads`).

    Attributes
    ----------
    One ``nn.Parameter`` of shape ``(K, *shape)`` per parameter of the members, named as in the
    member with dots replaced by ``__``.
    """

    def __init__(self, models: Sequence[Model], *, share_storage: bool = False):
        super().__init__()
        models = list(models)
        if not models:
            raise ValueError("VmapStack needs at least one model")
        if share_storage and len(models) != 1:
            raise ValueError(f"share_storage needs exactly one model, got {len(models)}")
        self._names = [name for name, _ in models[0].named_parameters()]
        # buffers (constants of a model's configuration, e.g. the ALRNN's ReLU floor) are shared: the
        # template's are used for every member, so they must be equal across the members
        buffers = [dict(m.named_buffers()) for m in models]
        if any(b.keys() != buffers[0].keys() or any(not torch.equal(b[k], buffers[0][k]) for k in b) for b in buffers):
            raise ValueError(f"the members' buffers differ; the generic member stack stacks parameters and shares "
                             f"buffers: register a member-stacked kernel for {type(models[0]).__name__} in "
                             "dsrecon.stacking")
        self._template = [copy.deepcopy(models[0])]  # a list: not a submodule, its own tensors are never used
        for name in self._names:
            if share_storage:  # a (1, ...) view of the model's own parameter: no copy
                stacked = models[0].get_parameter(name).detach().unsqueeze(0)
            else:
                stacked = torch.stack([m.get_parameter(name).detach() for m in models]).clone()
            self.register_parameter(_flat(name), nn.Parameter(stacked))

    @property
    def K(self) -> int:
        return next(iter(self.parameters())).shape[0]

    @torch.no_grad()
    def write_to(self, models: Sequence[Model]) -> None:
        """Copy member k's slice into ``models[k]`` (in place)."""
        if len(models) != self.K:
            raise ValueError(f"need {self.K} models to write to, got {len(models)}")
        for k, m in enumerate(models):
            for name in self._names:
                m.get_parameter(name).copy_(getattr(self, _flat(name))[k])

    def loss_and_grads(self, x: torch.Tensor, alphas: torch.Tensor, reg_weight: float,
                       target: torch.Tensor | None = None, *, need_z_hat: bool = True):
        """Per-member losses of one batch each, gradients added to the stacked ``.grad``.

        Parameters
        ----------
        x, target : torch.Tensor, shape ``(K, B, T + 1, N)``
        alphas : torch.Tensor, shape ``(K, T + 1)``
        reg_weight : float
        need_z_hat : bool

        Returns
        -------
        loss (K,), mse (K,) : detached tensors; z_hat ``(K, B, T + 1, M)`` detached, or None
        """
        target = x if target is None else target
        alphas = torch.as_tensor(alphas, dtype=torch.float64).to(x.device).reshape(x.shape[0], -1)  # (K, T + 1)
        wrapper = _MemberLoss(self._template[0], reg_weight, need_z_hat)
        params = {"model." + name: getattr(self, _flat(name)) for name in self._names}
        loss, mse, z_hat = vmap(lambda p, xk, ak, tk: functional_call(wrapper, p, (xk, ak, tk)))(params, x, alphas,
                                                                                             target)
        finite = torch.isfinite(loss)  # (K,)
        # a member with a non-finite loss gets no gradient, as a one-model run does not backpropagate it
        torch.where(finite, loss, 0.0).sum().backward()
        return loss.detach(), mse.detach(), z_hat if need_z_hat else None

    @torch.no_grad()
    def growth_bounds(self, z_hat: torch.Tensor, estimator: str = "geometric_mean") -> torch.Tensor:
        """:func:`dsrecon.forcing.growth_bound` per member: ``z_hat (K, B, T, M) -> (K,)`` float64."""
        member = copy.deepcopy(self._template[0])
        out = []
        for k in range(self.K):
            for name in self._names:
                member.get_parameter(name).copy_(getattr(self, _flat(name))[k])
            out.append(growth_bound(member, z_hat[k], estimator))
        return torch.tensor(out, dtype=torch.float64)

    def grad_norms(self) -> torch.Tensor:
        """``(K,)`` float64 norm of each member's gradient."""
        return per_member_grad_norms(list(self.parameters()), self.K)

    def params_finite(self):
        """``(K,)`` bool NumPy array: every parameter of member k is finite."""
        return per_member_params_finite(list(self.parameters()), self.K)


def one_model_loss_and_grads(model: Model, x: torch.Tensor, alphas: torch.Tensor, reg_weight: float,
                             target: torch.Tensor | None = None) -> StepResult:
    """One model's update as a one-member stack: the ``"auto"`` backend of a model without a kernel.

    Same signature and result as :func:`dsrecon.loss.loss_and_grads` (``x, target (B, T + 1, N)``,
    ``alphas (T + 1,)``; gradients added to the parameters' ``.grad`` when the loss is finite). The
    computation is the one a member of an ensemble of any size and position runs
    (:class:`VmapStack`), so a model trained alone equals that member bit for bit
    (``tests/test_member_identity.py``).
    """
    check_windows(model, x)
    a = check_alphas(alphas, x.shape[1])
    view = _VIEWS.get(model)
    if view is None or any(p.data_ptr() != model.get_parameter(name).data_ptr()
                           for name, p in zip(view._names, view.parameters())):
        view = VmapStack([model], share_storage=True)  # rebuilt when a parameter got new storage
        _VIEWS[model] = view
    for p in view.parameters():
        p.grad = None
    loss, mse, z_hat = view.loss_and_grads(x.unsqueeze(0), a.unsqueeze(0), reg_weight,
                                           None if target is None else target.unsqueeze(0))
    loss, mse = float(loss[0]), float(mse[0])
    if math.isfinite(loss):
        with torch.no_grad():
            for name, p in zip(view._names, view.parameters()):
                q = model.get_parameter(name)
                q.grad = p.grad[0] if q.grad is None else q.grad + p.grad[0]
    return StepResult(loss, mse, z_hat[0])


_VIEWS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


__all__ = ["VmapStack", "member_rollout_loss", "one_model_loss_and_grads"]
