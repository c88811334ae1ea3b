"""The ``"auto"`` training backend of :func:`dsrecon.training.train`: the fastest path that trains a model.

The fused shPLRNN kernel (:mod:`dsrecon.fast.fused_plrnn`) for a shPLRNN whose tensors it takes
(CPU, float32/float64, M <= 64) where it builds; for every other model, and for the shPLRNN where
the kernel cannot run (on a GPU, a latent size beyond the kernel's, no C compiler: then one warning
per process, :func:`dsrecon.fast._kernels.available`), the generic path as a one-member stack
(:func:`dsrecon.vmap_stack.one_model_loss_and_grads`): the computation an ensemble member of that
family runs, so a model trained alone equals its ensemble member bit for bit. Same signature and
gradients as :func:`dsrecon.loss.loss_and_grads`. Registered in :data:`dsrecon.train_config.BACKENDS`.
"""
from __future__ import annotations

import warnings
import weakref

import torch

from dsrecon.fast import _kernels
from dsrecon.fast.fused_plrnn import is_fusable
from dsrecon.fast.fused_plrnn import loss_and_grads as fused
from dsrecon.loss import StepResult
from dsrecon.models.base import Model
from dsrecon.vmap_stack import one_model_loss_and_grads


def loss_and_grads(model: Model, x: torch.Tensor, alphas: torch.Tensor, reg_weight: float,
                   target: torch.Tensor | None = None) -> StepResult:
    """The ``"auto"`` backend: the fused path for a shPLRNN the kernel runs, the generic one-member
    stack for every other model."""
    if is_fusable(model):
        why = _kernels.unsupported(x.device, x.dtype, model.state_dim)
        if why is None and _kernels.available(stacklevel=3):  # no compiler: warns once per process
            return fused(model, x, alphas, reg_weight, target=target)
        if why is not None and x.device.type == "cpu" and model not in _WARNED:  # on a GPU: the path it has
            _WARNED.add(model)
            warnings.warn(f"the fused shPLRNN kernel cannot train this model ({why}); backend 'auto' uses the "
                          "generic path instead (same gradients, slower)", RuntimeWarning, stacklevel=3)
    return one_model_loss_and_grads(model, x, alphas, reg_weight, target=target)


# models told once that the kernel cannot train them
_WARNED: "weakref.WeakSet[Model]" = weakref.WeakSet()


__all__ = ["loss_and_grads"]
