"""Fast training paths: the fused shPLRNN rollout and batched ensembles of K models.

``loss_and_grads`` is the ``"fused"`` backend of :func:`dsrecon.training.train`
(``TrainConfig(backend="fused")``); :class:`EnsembleShPLRNN` is the shPLRNN's member stack, through
which :func:`dsrecon.train` trains an ensemble of K shPLRNNs in one batched computation
(:mod:`dsrecon.stacking`); :class:`~dsrecon.fast.radam.FusedRAdam` is the optimizer both use
(RAdam's update in one C loop). Not part of the promised public API (``dsrecon/__init__.py``).

The kernels are C only (:mod:`dsrecon.fast._kernels`, built on first use). Where they cannot run
(no C compiler, which is said once per process in one line; tensors off the CPU, as on CUDA; a
latent size beyond the kernel's) the shPLRNN takes the generic paths every other model takes: the
affine-forcing rollout for one model, the batched autograd stack for an ensemble, the eager loop
for free running.

Layers: the kernel modules (``_build``, ``_kernels``, ``free_run``, ``jacobian_norms``,
``radam``) import nothing above the models, so :mod:`dsrecon.rollout` and the models may use
them; the fast training paths (``fused_plrnn``, ``affine_forcing``, ``ensemble``) sit above
:mod:`dsrecon.rollout` and :mod:`dsrecon.loss`, below :mod:`dsrecon.training`, which reaches them
through :mod:`dsrecon.stacking` and its backend registry. The names below are therefore loaded on first use (as in
``dsrecon/__init__.py``): importing one kernel module must not import the trainers. Code inside
dsrecon imports from the defining modules (``tests/test_layering.py``).
"""

from importlib import import_module

# public name -> module that defines it
_NAMES = {
    "kernel_threads": "dsrecon.fast._kernels",
    "set_kernel_threads": "dsrecon.fast._kernels",
    "EnsembleShPLRNN": "dsrecon.fast.ensemble",
    "ensemble_loss_and_grads": "dsrecon.fast.ensemble",
    "fused_forced_loss": "dsrecon.fast.fused_plrnn",
    "fused_forced_rollout": "dsrecon.fast.fused_plrnn",
    "loss_and_grads": "dsrecon.fast.fused_plrnn",
    "fused_generate": "dsrecon.fast.free_run",
    "is_fusable": "dsrecon.fast.free_run",
}

__all__ = sorted(_NAMES)


def __getattr__(name):
    if name in _NAMES:
        value = getattr(import_module(_NAMES[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'dsrecon.fast' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *__all__])
