"""Training a model on one trajectory with (generalized) teacher forcing: ``train``.

One update: sample ``B`` windows of ``T_seq + 1`` steps, unroll the model with the forcing
policy's ``alphas`` (``dsrecon.rollout.forced_rollout``), loss = MSE of the unforced predictions
plus ``reg_weight * model.regularization()``, backpropagate, RAdam step, let the policy adapt
(adaptive GTF). The loss-and-gradient computation of one update is a single swappable function
(``TrainConfig.backend``): ``"plain"`` is the autograd reference below; ``"fused"`` (the shPLRNN's
compiled kernel) and ``"affine"`` (any model with ``affine_forcing``: the forcing folded into one
product per step) are fast paths in ``dsrecon.fast`` with the same signature and gradients (see
:func:`loss_and_grads`); ``"auto"`` (the default, :mod:`dsrecon.fast.auto_backend`) takes the fused
path for a shPLRNN, the affine one for the other dsrecon models and the plain one for a model
without ``affine_forcing``. The trainer imports no kernel: backends resolve through the registry
:data:`dsrecon.train_config.BACKENDS`, the optimizer and the gradient checks through
:mod:`dsrecon.stacking`. An :class:`dsrecon.ensemble.Ensemble` trains in the member-axis loop of
:mod:`dsrecon.member_training`.

Defaults: dsrecon.defaults; the method: the GTF paper (Hess et al., ICML 2023; docs/method.md section 3).
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
import warnings
from importlib import import_module

import torch

from dsrecon.data import sample_windows, window_table
from dsrecon.ensemble import Ensemble
from dsrecon.forcing import Forcing, default_forcing, growth_bound
from dsrecon.history import diag_due
from dsrecon.loss import StepResult, loss_and_grads, loss_from_rollout  # noqa: F401 (public here too)
from dsrecon.member_training import train_members
from dsrecon.models.base import Model
from dsrecon.run_folder import open_run, record_epoch
from dsrecon.selection import BestByValidation
from dsrecon.stacking import make_optimizer, model_grad_norm, model_params_finite
from dsrecon.train_config import BACKENDS, TrainConfig, TrainResult
from dsrecon.training_common import (compute_settings, epoch_record, last_validation, lr_schedule, progress_bar,
                                     series_tensors, validate_epoch)


def _without_advice(err: Exception) -> str:
    """An error's first clause: the fast kernels' own advice names their internal backends
    (e.g. 'numpy'), which are not values of ``TrainConfig.backend`` or the CLI's ``--backend``."""
    return str(err).split("; use backend=")[0]


def resolve_backend(name: str):
    """The loss-and-gradient function of a backend name."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; valid: {', '.join(BACKENDS)}")
    module, func = BACKENDS[name].split(":")
    try:
        return getattr(import_module(module), func)
    except (ImportError, AttributeError) as err:
        raise ImportError(f"training backend {name!r} is not available ({err}); use backend='plain'") from err


def train(model: Model | Ensemble, data, config: TrainConfig = TrainConfig(), forcing: Forcing | None = None, *,
          val_data=None, run_dir=None, resume: bool = False, progress: bool = True, callback=None,
          run_meta: dict | None = None) -> TrainResult:
    """Train ``model`` (or the K members of an ensemble) in place on one trajectory with a forcing policy.

    Parameters
    ----------
    model : Model or Ensemble
        Any registered model (trained in place, moved to ``config.device``), or a
        :class:`dsrecon.ensemble.Ensemble` of K models, trained together along a member axis
        (:mod:`dsrecon.member_training`): member k computes what a separate run with its seed
        computes, and ``TrainResult.members`` holds the K members' results.
    data : Trajectory or array, shape ``(T, N)``, or TrialSet
        Training series, finite, ``T >= seq_len + 1``, ``N = model.obs_dim``; a
        :class:`dsrecon.trials.TrialSet`'s windows are drawn inside its trials.
    config : TrainConfig
        Settings (defaults: :mod:`dsrecon.defaults`).
    forcing : Forcing, optional
        Policy from ``dsrecon.forcing`` (default: ``dsrecon.forcing.default_forcing()``, GTF with
        alpha = 0.1, as ``dsrecon fit``). For
        an ensemble: one policy (each member follows its own copy) or a sequence of K policies,
        e.g. GTF with a different alpha per member.
    val_data : Trajectory or array, optional
        Held-out series for D_stsp / D_H every ``config.val_every`` epochs.
    run_dir : str or Path, optional
        Folder for config.json, history.csv and checkpoints/last.pt. A folder that already holds a
        checkpointed run is never overwritten: pass ``resume=True`` to continue it, or another
        folder. A run that stopped before its first checkpoint starts over in place. While
        training, ``run_dir/.dsrecon.lock`` keeps a second process from writing into the folder.
    resume : bool
        Continue the run in ``run_dir`` from its last checkpoint, restoring parameters, optimizer,
        schedule, forcing state (alpha) and the window generator: the result equals an
        uninterrupted run. Without a checkpoint yet, the run starts at epoch 0 with the settings
        of its config.json (which must match).
    progress : bool
        Show a tqdm progress bar (loss, alpha, latest D_stsp).
    callback : callable, optional
        ``callback(epoch, record, model)`` after each epoch (after the checkpoint); returning True
        stops the run early (``finished=False``).
    run_meta : dict, optional
        Extra JSON-serializable information stored in config.json and checkpoints (e.g. the data
        source of a CLI run).

    Returns
    -------
    TrainResult

    Notes
    -----
    A non-finite loss, gradient or parameter restores the state at the start of the epoch (model,
    optimizer, forcing), multiplies the learning rate by ``config.lr_recovery_factor``, warns and
    records a ``warning`` in the history; after ``max_recoveries`` in a row it raises RuntimeError.
    An ensemble member is restored alone, without lowering the shared learning rate, and after
    ``max_recoveries`` events it is frozen while its neighbours train on.
    """
    if not isinstance(config, TrainConfig):
        raise ValueError(f"config must be a TrainConfig, got {type(config).__name__}")
    if isinstance(model, Ensemble):
        return train_members(model, data, config, forcing, val_data=val_data, run_dir=run_dir, resume=resume,
                             progress=progress, callback=callback, run_meta=run_meta)
    if not isinstance(model, Model):
        raise ValueError(f"model must be a dsrecon Model (see dsrecon.make_model) or a dsrecon.Ensemble, got "
                         f"{type(model).__name__}")
    forcing = default_forcing() if forcing is None else forcing
    if not isinstance(forcing, Forcing):
        raise ValueError(f"forcing must be a dsrecon.forcing policy (see make_forcing), got {type(forcing).__name__}")
    step_fn = resolve_backend(config.backend)
    device = torch.device(config.device)
    model.to(device)
    x, val_x = series_tensors(data, val_data, model, config, model._dtype(), device)
    generator = torch.Generator().manual_seed(config.seed)  # windows and noise, CPU
    # torch.optim.RAdam with the update in one C loop (foreach=True where torch's own step runs)
    optimizer = make_optimizer(model.parameters(), config.lr_start)
    scheduler = lr_schedule(optimizer, config)
    best = BestByValidation()
    parts = dict(model=model, forcing=forcing, config=config, optimizer=optimizer, scheduler=scheduler,
                 generator=generator, best=best, run_meta=run_meta)
    lock = contextlib.ExitStack()  # the run folder's lock, held until training ends
    with lock:
        run, state = open_run(run_dir, resume, lock, preflight=lambda: _preflight(step_fn, model, x, forcing, config),
                              **parts)
        loop = _Updates(model, x, config, forcing, optimizer, step_fn, generator, state.n_updates,
                        window_table(data, config.seq_len))
        metrics, finished = last_validation(state.history), state.epoch >= config.epochs
        bar = progress_bar(config, state.epoch, "train", progress)
        t_start = time.perf_counter()
        with compute_settings(config, device), bar if bar is not None else contextlib.nullcontext():
            for epoch in range(state.epoch + 1, config.epochs + 1):
                warning, z_hat = loop.epoch(epoch)
                scheduler.step()
                G = growth_bound(model, z_hat) if z_hat is not None and diag_due(epoch, config) else float("nan")
                record = epoch_record(epoch, loop.losses, loop.mses, loop.gnorms, alpha=forcing.alpha, G=G,
                                      lr=optimizer.param_groups[0]["lr"],
                                      time_s=state.time_before + time.perf_counter() - t_start, warning=warning)
                metrics = validate_epoch(record, model, val_x, config, best) or metrics
                state.history.append(record)
                state.epoch, state.n_updates, finished = epoch, loop.n_updates, epoch == config.epochs
                record_epoch(run, state, finished, **parts)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{record['loss']:.4g}", alpha=f"{record['alpha']:.3f}",
                                    d_stsp=f"{metrics.get('d_stsp', float('nan')):.3f}")
                if callback is not None and callback(epoch, record, model):
                    break
    if config.select == "best_val" and best.state is not None:
        model.load_state_dict(best.state)
    return TrainResult(history=state.history, train_time_s=state.time_before + time.perf_counter() - t_start,
                       n_updates=loop.n_updates, epochs=len(state.history), finished=finished,
                       recoveries=loop.recoveries, metrics=metrics, run_dir=str(run.dir) if run is not None else None,
                       best_epoch=best.epoch, best_state=best.state)


class _Updates:
    """The updates of one model's epochs: windows (and input noise) from ``generator``, the backend's
    loss and gradients, gradient clipping, the RAdam step and the forcing policy's update; a
    non-finite loss, gradient or parameter restores the epoch's start (see :func:`_recover`)."""

    def __init__(self, model, x, config, forcing, optimizer, step_fn, generator, n_updates: int, valid_starts=None):
        self.model, self.x, self.config, self.forcing = model, x, config, forcing
        self.optimizer, self.step_fn, self.generator = optimizer, step_fn, generator
        self.n_updates, self.recoveries, self.in_a_row = n_updates, 0, 0
        self.valid_starts = valid_starts  # None for one series; a TrialSet's in-trial window starts
        self.alphas = None if forcing.adapts else forcing.alphas(config.seq_len + 1)  # a fixed policy's, once
        self.dtype = model._dtype()

    def epoch(self, epoch: int):
        """Run one epoch's updates; returns the recovery warning (or None) and the last update's z_hat."""
        model, config, forcing, optimizer = self.model, self.config, self.forcing, self.optimizer
        good = (copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict()),
                copy.deepcopy(forcing.state_dict()))
        self.losses, self.mses, self.gnorms, warning, z_hat = [], [], [], None, None
        for _ in range(config.batches_per_epoch):
            target = sample_windows(self.x, config.batch_size, config.seq_len, self.generator,
                                    self.valid_starts)  # (B, T+1, N)
            inputs = target
            if config.noise_std:
                noise = torch.randn(target.shape, generator=self.generator, dtype=self.dtype)
                inputs = target + config.noise_std * noise.to(target.device)  # (B, T+1, N)
            a = forcing.alphas(config.seq_len + 1) if self.alphas is None else self.alphas
            optimizer.zero_grad(set_to_none=True)
            res = self.step_fn(model, inputs, a, config.reg_weight, target=target)
            gn = model_grad_norm(model)
            ok = math.isfinite(res.loss) and math.isfinite(gn)
            if ok:
                if config.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                optimizer.step()
                ok = model_params_finite(model)
            if not ok:
                self.recoveries, self.in_a_row = self.recoveries + 1, self.in_a_row + 1
                warning = _recover(model, optimizer, forcing, good, config, epoch, res.loss, self.in_a_row)
                continue
            self.n_updates += 1
            forcing.update(model, res.z_hat, self.n_updates)
            self.losses.append(res.loss)
            self.mses.append(res.mse)
            self.gnorms.append(gn)
            z_hat = res.z_hat
        if warning is None:
            self.in_a_row = 0
        return warning, z_hat


def _preflight(step_fn, model: Model, x: torch.Tensor, forcing: Forcing, config: TrainConfig) -> None:
    """One loss-and-gradient call on the first window, so that a backend that cannot train this model
    fails before the run folder is written. Leaves no gradients and draws no random numbers."""
    window = x[: config.seq_len + 1].unsqueeze(0)  # (1, T + 1, N)
    try:
        step_fn(model, window, forcing.alphas(config.seq_len + 1), config.reg_weight, target=window)
    except (ValueError, ImportError) as err:
        raise ValueError(f"training backend {config.backend!r} cannot train this model ({_without_advice(err)}); "
                         "use backend='affine' or 'plain' (CLI: --backend affine or --backend plain)") from err
    finally:
        model.zero_grad(set_to_none=True)


def _recover(model, optimizer, forcing, good, config: TrainConfig, epoch: int, loss: float, in_a_row: int) -> str:
    """Restore the last good state, lower the learning rate, warn; raise after too many in a row."""
    if in_a_row > config.max_recoveries:
        raise RuntimeError(f"training diverged: {in_a_row} non-finite losses/parameters in a row at epoch "
                           f"{epoch} despite lowering the learning rate; try a smaller lr_start, grad_clip, "
                           f"or stronger forcing")
    model.load_state_dict(good[0])
    optimizer.load_state_dict(good[1])
    forcing.load_state_dict(good[2])
    for group in optimizer.param_groups:
        group["lr"] *= config.lr_recovery_factor ** in_a_row
    lr = optimizer.param_groups[0]["lr"]
    msg = (f"non-finite loss/gradient/parameters at epoch {epoch} (loss={loss}); restored the state at the "
           f"start of the epoch and lowered the learning rate to {lr:.3g}")
    warnings.warn(msg, RuntimeWarning, stacklevel=2)
    return msg


__all__ = ["TrainConfig", "TrainResult", "StepResult", "train", "loss_and_grads", "BACKENDS"]
