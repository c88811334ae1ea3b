"""The ``"auto"`` training backend of :func:`dsrecon.training.train`: the fastest path that trains a model.

The fused shPLRNN kernel (:mod:`dsrecon.fast.fused_plrnn`) for a shPLRNN it supports, the
affine-forcing path (:mod:`dsrecon.fast.affine_forcing`) for the other models that declare
``affine_forcing``, the plain autograd reference for the rest; same signature and gradients as
:func:`dsrecon.loss.loss_and_grads`. Registered in :data:`dsrecon.train_config.BACKENDS`.
"""

from __future__ import annotations

import warnings
import weakref

import torch

from dsrecon.fast import affine_forcing
from dsrecon.fast.fused_plrnn import is_fusable
from dsrecon.fast.fused_plrnn import loss_and_grads as fused
from dsrecon.loss import StepResult
from dsrecon.models.base import Model


def loss_and_grads(model: Model, x: torch.Tensor, alphas: torch.Tensor, reg_weight: float,
                   target: torch.Tensor | None = None) -> StepResult:
    """The ``"auto"`` backend: the fused path for a shPLRNN, the affine-forcing path for other models
    that declare ``affine_forcing``, the plain reference for the rest."""
    if is_fusable(model) and model not in _NOT_FUSABLE:
        try:
            return fused(model, x, alphas, reg_weight, target=target)
        except ValueError as err:  # a shape the fused kernel does not support, e.g. a large latent_dim
            _NOT_FUSABLE.add(model)
            warnings.warn(f"the fused shPLRNN kernel cannot train this model ({without_advice(err)}); "
                          "backend 'auto' uses the affine-forcing path instead (same gradients, slower)",
                          RuntimeWarning, stacklevel=3)
    return affine_forcing.loss_and_grads(model, x, alphas, reg_weight, target=target)


# models the fused kernel rejected once: "auto" does not try it again for them
_NOT_FUSABLE: "weakref.WeakSet[Model]" = weakref.WeakSet()


def without_advice(err: Exception) -> str:
    """An error's first clause: the fast kernels' own advice names their internal backends
    (e.g. 'numpy'), which are not values of ``TrainConfig.backend`` or the CLI's ``--backend``."""
    return str(err).split("; use backend=")[0]


__all__ = ["loss_and_grads", "without_advice"]
