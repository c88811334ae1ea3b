"""Fast training paths: the fused shPLRNN rollout and batched ensembles of K models.

``loss_and_grads`` is the ``"fused"`` backend of :func:`dsrecon.training.train`
(``TrainConfig(backend="fused")``); :func:`train_ensemble` trains K shPLRNNs of one shape in one
batched computation; :class:`~dsrecon.fast.radam.FusedRAdam` is the optimizer both use (RAdam's
update in one C loop). Not part of the promised public API (``dsrecon/__init__.py``).
"""

from dsrecon.fast._kernels import kernel_threads, set_kernel_spin, set_kernel_threads
from dsrecon.fast.ensemble import EnsembleShPLRNN, ensemble_loss_and_grads
from dsrecon.fast.ensemble_train import train_ensemble
from dsrecon.fast.fused_plrnn import (fused_forced_loss, fused_forced_rollout, fused_generate, is_fusable,
                                      loss_and_grads)

__all__ = ["EnsembleShPLRNN", "ensemble_loss_and_grads", "fused_forced_loss", "fused_forced_rollout", "fused_generate",
           "is_fusable", "kernel_threads", "loss_and_grads", "set_kernel_spin", "set_kernel_threads",
           "train_ensemble"]
