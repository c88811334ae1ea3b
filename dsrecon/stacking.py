"""The seam between the ensemble trainer and the fast paths: one member stack per model family.

The ensemble trainer (:mod:`dsrecon.member_training`) gets the object that computes an ensemble's
losses and gradients from :func:`stack_members` alone, and both trainers get their optimizer and
their gradient-norm and finiteness checks from here (the one-model trainer's loss-and-gradient
function comes from the backend registry, :data:`dsrecon.train_config.BACKENDS`); no trainer
imports a kernel, and no kernel imports a trainer.
A family with a hand-written kernel registers its stack class in ``KERNEL_STACKS`` (registry name
-> ``"module:Class"``); that class's static ``kernel_runs(models) -> bool`` says whether its kernel
can train these members here (a compiler, their device, dtype and sizes). Every other registered
model, present or future, and a kernel family whose kernel cannot run trains through the generic
stack (:class:`dsrecon.vmap_stack.VmapStack`: autograd batched over the member axis with
``torch.func.vmap``; it runs on CUDA too).

A member stack holds the K members' parameters stacked as ``(K, ...)`` ``nn.Parameter`` leaves
and provides:

=====================================  ==========================================================
``K``                                  number of members
``loss_and_grads(x, alphas, reg_weight, target, need_z_hat=...)``
                                       ``x, target (K, B, T+1, N)``, ``alphas (K, T+1)``: per-member
                                       ``loss (K,)``, ``mse (K,)``, ``z_hat (K, B, T+1, M)`` or
                                       None; gradients added to the stacked ``.grad``
``growth_bounds(z_hat, estimator)``    :func:`dsrecon.forcing.growth_bound` per member, ``(K,)``
``grad_norms()``, ``params_finite()``  per-member gradient norms ``(K,)`` and finiteness ``(K,)``
``write_to(models)``                   copy member k's slice into ``models[k]``
=====================================  ==========================================================

plus ``nn.Module``'s ``parameters``, ``named_parameters``, ``state_dict`` and ``load_state_dict``.
"""

from __future__ import annotations

import functools
from importlib import import_module
from typing import Sequence

import torch

# model registry name -> "module:Class" of a member stack with a hand-written kernel
KERNEL_STACKS = {"shplrnn": "dsrecon.fast.ensemble:EnsembleShPLRNN"}
GENERIC_STACK = "dsrecon.vmap_stack:VmapStack"
# TrainConfig.backend values that take a family's kernel stack where one is registered
KERNEL_BACKENDS = ("auto", "fused")


@functools.cache
def _load(spec: str):
    module, name = spec.split(":")
    return getattr(import_module(module), name)


def stack_class(name: str, backend: str = "auto") -> type:
    """The member-stack class of the model family ``name`` for a ``TrainConfig.backend``.

    ``"auto"`` and ``"fused"`` take the family's kernel stack where one is registered, the generic
    stack otherwise; ``"plain"`` and ``"affine"`` always take the generic stack (the autograd
    reference, batched over the members).
    """
    if backend in KERNEL_BACKENDS and name in KERNEL_STACKS:
        return _load(KERNEL_STACKS[name])
    return _load(GENERIC_STACK)


def stack_members(models: Sequence, backend: str = "auto"):
    """A member stack holding copies of ``models``' parameters (see the module docstring): the class
    :func:`stack_class` names, or the generic stack where that class's kernel cannot run them."""
    cls = stack_class(models[0].name, backend)
    generic = _load(GENERIC_STACK)
    if cls is not generic and not cls.kernel_runs(models):
        cls = generic
    return cls(models)


def make_optimizer(params, lr: float) -> torch.optim.Optimizer:
    """RAdam over the stacked parameters (elementwise, so the members do not interact), with its update
    in one C loop where it applies (:class:`dsrecon.fast.radam.FusedRAdam`)."""
    return _load("dsrecon.fast.radam:FusedRAdam")(params, lr=lr, foreach=True)


def model_grad_norm(model) -> float:
    """Euclidean norm of all of one model's gradients, NaN without any
    (:func:`dsrecon.fast.members.model_grad_norm`)."""
    return _load("dsrecon.fast.members:model_grad_norm")(model)


def model_params_finite(model) -> bool:
    """Whether every parameter of one model is finite (:func:`dsrecon.fast.members.model_params_finite`)."""
    return _load("dsrecon.fast.members:model_params_finite")(model)


__all__ = ["GENERIC_STACK", "KERNEL_STACKS", "make_optimizer", "model_grad_norm", "model_params_finite",
           "stack_class", "stack_members"]
