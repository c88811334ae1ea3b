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
from dataclasses import asdict
from importlib import import_module
from pathlib import Path

import numpy as np
import torch

from dsrecon.checkpoint import check_resumable, model_spec, read_checkpoint, run_lock, save_checkpoint, write_json
from dsrecon.data import as_series as _as_series
from dsrecon.ensemble import Ensemble
from dsrecon.forcing import Forcing, default_forcing, growth_bound
from dsrecon.history import diag_due as _diag_due
from dsrecon.history import validate as _validate
from dsrecon.history import write_history_csv as _write_history_csv
from dsrecon.member_training import train_members
from dsrecon.loss import StepResult, loss_and_grads, loss_from_rollout  # noqa: F401 (public here too)
from dsrecon.models.base import Model
from dsrecon.selection import BestByValidation
from dsrecon.stacking import make_optimizer, model_grad_norm, model_params_finite
from dsrecon.train_config import BACKENDS, RESUME_IGNORED, TrainConfig, TrainResult

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


class _Run:
    """Folder layout of a run: config.json, history.csv, checkpoints/last.pt."""

    def __init__(self, run_dir):
        self.dir = Path(run_dir)
        self.config = self.dir / "config.json"
        self.history = self.dir / "history.csv"
        self.checkpoint = self.dir / "checkpoints" / "last.pt"

    def exists(self) -> bool:
        """Whether the folder holds a run that reached a checkpoint (one that can be resumed)."""
        return self.checkpoint.exists()

    def started(self) -> bool:
        """Whether a run was started here (config.json written), checkpointed or not."""
        return self.config.exists()

    def check_writable(self) -> None:
        """Refuse a folder that is a file, or that holds files of the trainer's names but no run."""
        if self.dir.exists() and not self.dir.is_dir():
            raise ValueError(f"run folder {self.dir} is a file, not a folder; choose a folder path (CLI: --out DIR)")
        if not self.started() and not self.exists() and self.history.exists():
            raise RuntimeError(f"{self.dir} holds a {self.history.name} but no dsrecon run (no config.json); "
                               "training would overwrite it: choose a new or empty folder (CLI: --out)")


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
    dtype = model._dtype()
    # contiguous: windows are cut from a strided view of the series
    x = torch.as_tensor(_as_series(data, model, "data", config.seq_len + 1), dtype=dtype, device=device).contiguous()
    val_x = None
    if val_data is not None:
        val_x = torch.as_tensor(_as_series(val_data, model, "val_data", 2), dtype=dtype, device=device)
    from dsrecon.data import sample_windows, window_table

    valid_starts = window_table(data, config.seq_len)  # None for one series; a TrialSet's in-trial starts

    generator = torch.Generator().manual_seed(config.seed)  # windows and noise, CPU
    # torch.optim.RAdam with the update in one C loop (foreach=True where torch's own step runs)
    optimizer = make_optimizer(model.parameters(), config.lr_start)
    gamma = (config.lr_end / config.lr_start) ** (1.0 / config.epochs)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=gamma)
    history, start_epoch, n_updates, time_before = [], 0, 0, 0.0
    best = BestByValidation()
    if config.select == "best_val" and val_data is None:
        raise ValueError("TrainConfig.select='best_val' needs val_data to select by; pass val_data or "
                         "select='last'")
    run = _Run(run_dir) if run_dir is not None else None
    cfg_dict = asdict(config)
    lock = contextlib.ExitStack()  # the run folder's lock, held until training ends
    if run is not None:
        run.check_writable()
        lock.enter_context(run_lock(run.dir))
        try:
            if resume and run.exists():
                state = read_checkpoint(run.checkpoint)
                check_resumable(state, run.checkpoint)
                _check_same_run(state["config"], model, forcing, cfg_dict, run.checkpoint)
                model.load_state_dict(state["model"])
                optimizer.load_state_dict(state["optimizer"])
                scheduler.load_state_dict(state["scheduler"])
                forcing.load_state_dict(state["forcing"] or {})
                generator.set_state(state["generator"])
                if state.get("best"):
                    best.load_state_dict(state["best"])
                history, start_epoch, n_updates = state["history"], state["epoch"], state["n_updates"]
                time_before = history[-1]["time_s"] if history else 0.0
            elif run.exists():
                raise RuntimeError(f"run folder {run.dir} already holds a run; pass resume=True "
                                   f"(CLI: --resume {run.dir}) to continue it, or choose a new folder (CLI: --out)")
            else:
                _start_run(run, model, forcing, config, cfg_dict, run_meta, resume, step_fn, x)
        except BaseException:
            lock.close()
            raise
    elif resume:
        raise ValueError("resume=True needs run_dir, the folder of the run to continue")

    alphas = None if forcing.adapts else forcing.alphas(config.seq_len + 1)  # a fixed policy's, once
    recoveries, in_a_row, metrics = 0, 0, {}
    for record in reversed(history):
        if "d_stsp" in record:
            metrics = {"d_stsp": record["d_stsp"], "d_h": record["d_h"]}
            break
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.epochs, initial=start_epoch, desc="train", unit="epoch", dynamic_ncols=True)
    # Subnormal floats (|x| < 1e-38 in float32) appear as gradients and Adam moments shrink late in a
    # run; x86 CPUs handle them in microcode, 10-100x slower, so flushing them to zero keeps the
    # time per update constant. The numerical effect is below float resolution of the parameters.
    torch.set_flush_denormal(True)
    threads_before = torch.get_num_threads()
    if config.threads is not None and device.type == "cpu":
        torch.set_num_threads(config.threads)
    t_start = time.perf_counter()
    finished = start_epoch >= config.epochs
    try:
        epoch = start_epoch
        for epoch in range(start_epoch + 1, config.epochs + 1):
            good = (copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict()),
                    copy.deepcopy(forcing.state_dict()))
            losses, mses, gnorms, warning, z_hat = [], [], [], None, None
            for _ in range(config.batches_per_epoch):
                target = sample_windows(x, config.batch_size, config.seq_len, generator, valid_starts)  # (B, T+1, N)
                inputs = target
                if config.noise_std:
                    noise = torch.randn(target.shape, generator=generator, dtype=dtype)
                    inputs = target + config.noise_std * noise.to(device)  # (B, T+1, N)
                a = forcing.alphas(config.seq_len + 1) if alphas is None else alphas
                optimizer.zero_grad(set_to_none=True)
                res = step_fn(model, inputs, a, config.reg_weight, target=target)
                gn = model_grad_norm(model)
                ok = math.isfinite(res.loss) and math.isfinite(gn)
                if ok:
                    if config.grad_clip is not None:
                        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                    optimizer.step()
                    ok = model_params_finite(model)
                if not ok:
                    recoveries, in_a_row = recoveries + 1, in_a_row + 1
                    warning = _recover(model, optimizer, forcing, good, config, epoch, res.loss, in_a_row)
                    continue
                n_updates += 1
                forcing.update(model, res.z_hat, n_updates)
                losses.append(res.loss)
                mses.append(res.mse)
                gnorms.append(gn)
                z_hat = res.z_hat
            scheduler.step()
            if warning is None:
                in_a_row = 0
            record = {"epoch": epoch, "loss": float(np.mean(losses)) if losses else float("nan"),
                      "mse": float(np.mean(mses)) if mses else float("nan"), "alpha": forcing.alpha,
                      "grad_norm": float(np.mean(gnorms)) if gnorms else float("nan"),
                      "G": growth_bound(model, z_hat) if z_hat is not None and _diag_due(epoch, config)
                      else float("nan"),
                      "lr": optimizer.param_groups[0]["lr"],
                      "time_s": time_before + time.perf_counter() - t_start}
            if warning is not None:
                record["warning"] = warning
            if val_x is not None and (epoch % config.val_every == 0 or epoch == config.epochs):
                val = _validate(model, val_x, config)
                record.update(val)
                if "d_stsp" in val:
                    metrics = val
                best.offer(epoch, val, model)
            history.append(record)
            finished = epoch == config.epochs
            if run is not None:
                _write_history_csv(run.history, history)
                if epoch % config.checkpoint_every == 0 or finished:
                    save_checkpoint(run.checkpoint, model, optimizer=optimizer, scheduler=scheduler,
                                    forcing=forcing, generator=generator, epoch=epoch, n_updates=n_updates,
                                    history=history, train_config=cfg_dict, finished=finished, extra=run_meta,
                                    best=best.state_dict())
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{record['loss']:.4g}", alpha=f"{record['alpha']:.3f}",
                                d_stsp=f"{metrics.get('d_stsp', float('nan')):.3f}")
            if callback is not None and callback(epoch, record, model):
                break
    finally:
        torch.set_flush_denormal(False)
        torch.set_num_threads(threads_before)
        if bar is not None:
            bar.close()
        lock.close()
    if config.select == "best_val" and best.state is not None:
        model.load_state_dict(best.state)
    return TrainResult(history=history, train_time_s=time_before + time.perf_counter() - t_start,
                       n_updates=n_updates, epochs=len(history), finished=finished, recoveries=recoveries,
                       metrics=metrics, run_dir=str(run.dir) if run is not None else None,
                       best_epoch=best.epoch, best_state=best.state)


def _start_run(run: _Run, model: Model, forcing: Forcing, config: TrainConfig, cfg_dict: dict, run_meta,
               resume: bool, step_fn, x: torch.Tensor) -> None:
    """Begin a run in ``run.dir`` at epoch 0: check that the backend can train the model, then write config.json.

    A folder whose run never reached a checkpoint (killed early, or failed after config.json) holds
    nothing to keep: the run starts over in place. ``resume=True`` there continues "from epoch 0"
    with the stored settings, which must match.
    """
    if resume:
        if not run.started():
            raise FileNotFoundError(f"no run to resume in {run.dir}: it has no checkpoints/last.pt and no "
                                    "config.json; start a new run there instead (CLI: --out DIR, no --resume)")
        stored = _read_run_config(run.config)
        _check_same_run(stored, model, forcing, cfg_dict, run.config)
        warnings.warn(f"{run.dir} has no checkpoint yet (its run stopped before the first one): training starts "
                      "at epoch 0 with the stored settings", RuntimeWarning, stacklevel=3)
    _preflight(step_fn, model, x, forcing, config)
    run.history.unlink(missing_ok=True)  # epochs of a run that never reached a checkpoint
    write_json(run.config, {"model": model_spec(model), "forcing": forcing.config(), "train": cfg_dict,
                            "extra": run_meta})


def _read_run_config(path: Path) -> dict:
    import json

    try:
        stored = json.loads(path.read_text())
        stored["model"], stored["forcing"], stored["train"]  # noqa: B018 (presence check)
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise RuntimeError(f"cannot resume from {path}: unreadable run config ({type(err).__name__}: {err}); "
                           "start a new run in a new folder") from None
    return stored


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


def _check_same_run(stored: dict, model: Model, forcing: Forcing, cfg: dict, path) -> None:
    """A resumed run must continue with the same model, forcing and settings."""
    diffs = []
    if stored["model"] != model_spec(model):
        diffs.append(f"model {stored['model']} != {model_spec(model)}")
    if stored["forcing"] != forcing.config():
        diffs.append(f"forcing {stored['forcing']} != {forcing.config()}")
    for k, v in (stored["train"] or {}).items():
        if k not in RESUME_IGNORED and cfg.get(k) != v:
            diffs.append(f"train.{k}: stored {v!r}, now {cfg.get(k)!r}")
    if diffs:
        raise ValueError(f"cannot resume {path}: the settings differ from the stored run ({'; '.join(diffs)}); "
                         f"resume with the stored settings or start a new run folder")


__all__ = ["TrainConfig", "TrainResult", "StepResult", "train", "loss_and_grads", "BACKENDS"]
