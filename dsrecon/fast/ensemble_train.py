r"""``train_ensemble``: K seeds of one shPLRNN configuration trained in one batched computation.

The loop is :func:`dsrecon.training.train`'s, with a leading model axis: model k draws its windows
(and noise) from its own generator seeded ``seeds[k]``, has its own copy of the forcing policy
(its own adaptive alpha) and its own per-epoch history; the K models share one RAdam optimizer
over stacked parameters (elementwise, so no coupling) and the learning-rate schedule.
"""

from __future__ import annotations

import copy
import json
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from dsrecon.checkpoint import atomic_write, model_spec, read_checkpoint, save_checkpoint
from dsrecon.fast import _kernels
from dsrecon.fast.ensemble import EnsembleShPLRNN, ensemble_loss_and_grads
from dsrecon.fast.radam import FusedRAdam
from dsrecon.forcing import AdaptiveGTF, Forcing, default_forcing
from dsrecon.models.plrnn import ShPLRNN
from dsrecon.selection import BestByValidation


def _per_model_grad_norms(params: list, K: int) -> torch.Tensor:
    """``(K,)`` float64 Euclidean norm of each model's gradient over the K-stacked ``params``."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(K, dtype=torch.float64, device=params[0].device)
    fast = _kernels.stacked_sumsq(grads, K)  # one C pass, else torch's cat and norm
    if fast is not None:
        return torch.from_numpy(np.sqrt(fast[0]))
    return torch.linalg.vector_norm(torch.cat([g.reshape(K, -1) for g in grads], dim=1).double(), dim=1)


def _per_model_params_finite(params: list, K: int) -> np.ndarray:
    """``(K,)`` bool: every parameter of model k is finite (one pass over the K-stacked ``params``)."""
    fast = _kernels.stacked_sumsq(params, K)  # reads the values only
    if fast is not None:
        return fast[1]
    return torch.isfinite(torch.cat([p.detach().reshape(K, -1) for p in params], dim=1)).all(1).cpu().numpy()


def train_ensemble(models: Sequence[ShPLRNN], data, config=None, forcing: Forcing | None = None, *,
                   seeds: Sequence[int] | None = None, val_data=None, progress: bool = False,
                   backend: str = "auto", callback=None, run_dir=None, resume: bool = False) -> list:
    """Train K shPLRNNs of one configuration at once; equal to K :func:`dsrecon.training.train` runs.

    Parameters
    ----------
    models : sequence of ShPLRNN
        K models with the same ``config()`` (e.g. built with seeds 0..K-1); trained in place.
    data : Trajectory or array ``(T, N)``
        Training series, shared by all models.
    config : TrainConfig, optional
        As for ``train``; ``config.seed`` is replaced by ``seeds[k]`` for model k, and
        ``config.backend`` is ignored (the ensemble always runs the fused kernel); ``config.threads``
        torch threads during the run, as in ``train``.
    forcing : Forcing, optional
        Policy (default ``dsrecon.forcing.default_forcing()``, as ``train``); each model gets its own deep copy.
    seeds : sequence of int, optional
        Window-sampling seed of each model (default ``config.seed + k``).
    val_data : Trajectory or array, optional
        Validation series for D_stsp / D_H every ``config.val_every`` epochs, per model.
    progress : bool
        tqdm bar over epochs.
    backend : {"auto", "c", "numpy", "torch"}
        Kernel of the fused rollout.
    callback : callable, optional
        ``callback(epoch, records, models)`` after each epoch, ``records`` the K new history
        records, ``models`` the K models holding the current parameters; returning True stops.
    run_dir : str or Path, optional
        Folder for the ensemble's checkpoint (``ensemble.pt``, every ``config.checkpoint_every``
        epochs, when a callback stops the run and at the end: parameters, RAdam moments,
        schedule, each model's forcing state, window generator and history) and, at the end, one
        ``seed<s>.pt`` per model (:func:`dsrecon.checkpoint.load_checkpoint` reads it). An
        existing run is never overwritten: pass ``resume=True`` to continue it.
    resume : bool
        Continue the run in ``run_dir`` from its checkpoint; the models, seeds, forcing and
        settings must be those of the stored run. The continued run equals an uninterrupted one.

    Returns
    -------
    list of TrainResult
        One per model, as ``train`` returns; ``train_time_s`` is the shared wall time of the
        ensemble (including earlier segments of a resumed run), ``run_dir`` the ensemble's folder
        (or None).

    Notes
    -----
    A model whose loss, gradient or parameters become non-finite is restored to its state at the
    start of the epoch (parameters and optimizer moments), as ``train`` does, but the ensemble's
    step count and learning rate are shared, so that model's run then differs from a separate run
    (which would lower its own learning rate); the history records a ``warning``. A run that fails
    ``config.max_recoveries`` times is frozen (its gradients zeroed) and reported. Runs that stay
    finite, the normal case, equal separate runs.
    """
    from dsrecon.data import gather_windows, window_starts
    from dsrecon.data import as_series as _as_series
    from dsrecon.history import diag_due as _diag_due
    from dsrecon.history import validate as _validate
    from dsrecon.training import TrainConfig, TrainResult

    config = TrainConfig() if config is None else config
    models = list(models)
    ens = EnsembleShPLRNN(models)
    K = ens.K
    seeds = [config.seed + k for k in range(K)] if seeds is None else [int(s) for s in seeds]
    if len(seeds) != K:
        raise ValueError(f"need one seed per model, {K}, got {len(seeds)}")
    forcing = default_forcing() if forcing is None else forcing
    if not isinstance(forcing, Forcing):
        raise ValueError(f"forcing must be a dsrecon.forcing policy, got {type(forcing).__name__}")
    forcings = [copy.deepcopy(forcing) for _ in range(K)]
    device = torch.device(config.device)
    ens.to(device)
    for m in models:
        m.to(device)
    dtype = ens.A.dtype
    # contiguous: windows are cut from a strided view of the series
    x = torch.as_tensor(_as_series(data, models[0], "data", config.seq_len + 1), dtype=dtype,
                        device=device).contiguous()
    val_x = None
    if val_data is not None:
        val_x = torch.as_tensor(_as_series(val_data, models[0], "val_data", 2), dtype=dtype, device=device)
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    params = list(ens.parameters())  # fixed objects: restores and checkpoints write into them
    optimizer = FusedRAdam(params, lr=config.lr_start, foreach=True)  # as train()
    gamma = (config.lr_end / config.lr_start) ** (1.0 / config.epochs)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=gamma)
    # the K policies are copies of one: AdaptiveGTF's update runs batched over the K models, a
    # fixed policy has none, any other policy's update runs per model
    adaptive = type(forcing).update is AdaptiveGTF.update
    generic_policy = forcing.adapts and not adaptive

    def stacked_alphas() -> torch.Tensor:
        return torch.stack([torch.as_tensor(f.alphas(config.seq_len + 1), dtype=torch.float64)
                            for f in forcings])  # (K, T+1)

    # a fixed policy's alphas never change: stacked once; AdaptiveGTF's are restacked when its
    # growth-bound step or a restore ran (stale), any other policy's every update
    alphas, stale = stacked_alphas(), False
    n_steps = x.shape[0]
    window_shape = (config.batch_size, config.seq_len + 1, x.shape[1])
    histories = [[] for _ in range(K)]
    metrics = [{} for _ in range(K)]
    best = [BestByValidation() for _ in range(K)]
    if config.select == "best_val" and val_data is None:
        raise ValueError("TrainConfig.select='best_val' needs val_data to select by; pass val_data or "
                         "select='last'")
    recoveries = np.zeros(K, dtype=int)
    frozen = np.zeros(K, dtype=bool)
    n_updates = 0
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.epochs, desc=f"train x{K}", unit="epoch", dynamic_ncols=True)
    ckpt = None if run_dir is None else Path(run_dir) / ENSEMBLE_CHECKPOINT
    run_config = {"models": [model_spec(m) for m in models], "seeds": seeds, "forcing": forcing.config(),
                  "train": asdict(config)}
    start_epoch, time_before = 0, 0.0
    if ckpt is not None and resume:
        state = _read_ensemble_checkpoint(ckpt)
        _check_same_ensemble(state["config"], run_config, ckpt)
        ens.load_state_dict(state["ensemble"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        for f, fs in zip(forcings, state["forcings"]):
            f.load_state_dict(fs)
        alphas = stacked_alphas()
        for g, gs in zip(generators, state["generators"]):
            g.set_state(gs)
        histories = [list(h) for h in state["histories"]]
        start_epoch, n_updates, time_before = state["epoch"], state["n_updates"], state["time_s"]
        recoveries[:] = state["recoveries"]
        frozen[:] = state["frozen"]
        for k in range(K):
            metrics[k] = next((dict(r) for r in reversed(histories[k]) if "d_stsp" in r), {})
            if state.get("best"):
                best[k].load_state_dict(state["best"][k])
        ens.write_to(models)
        if bar is not None:
            bar.update(start_epoch)
    elif ckpt is not None and ckpt.exists():
        raise RuntimeError(f"{run_dir} already holds an ensemble run; pass resume=True to continue it, "
                           "or choose a new folder")
    elif resume:
        raise ValueError("resume=True needs run_dir, the folder of the run to continue")

    def save(epoch: int, elapsed: float) -> None:
        state = {"format": 1, "kind": "ensemble", "config_json": json.dumps(run_config, default=str),
                 "ensemble": ens.state_dict(), "optimizer": optimizer.state_dict(),
                 "scheduler": scheduler.state_dict(), "forcings": [f.state_dict() for f in forcings],
                 "generators": [g.get_state() for g in generators], "histories": histories,
                 "epoch": int(epoch), "n_updates": int(n_updates), "time_s": float(elapsed),
                 "recoveries": [int(r) for r in recoveries], "frozen": [bool(f) for f in frozen],
                 "best": [b.state_dict() for b in best]}
        atomic_write(ckpt, lambda fh: torch.save(state, fh))

    torch.set_flush_denormal(True)  # as train(): subnormal moments late in a run cost 10-100x
    # as train(): config.threads torch threads (1 by default). torch's default (every core) made a
    # K = 10 update ~1.5x slower: its OpenMP workers spin on the core the kernel's pool thread needs
    threads_before = torch.get_num_threads()
    if config.threads is not None and device.type == "cpu":
        torch.set_num_threads(config.threads)
    # the pool threads of a multi-threaded kernel call stay awake through the update's Python part
    # (ENSEMBLE_SPIN_S instead of 50 us, unless the user set a spin): 3-6 % less wall time at K = 10
    # on 2 cores; not with torch threads of our own, whose OpenMP workers would compete for the cores
    spin = _kernels.ensemble_spin(device.type == "cpu" and min(K, _kernels.kernel_threads()) > 1
                                  and torch.get_num_threads() == 1)
    t_start = time.perf_counter() - time_before
    epochs_done = start_epoch
    spin.__enter__()  # left in the finally clause below
    try:
        for epoch in range(start_epoch + 1, config.epochs + 1):
            good = (copy.deepcopy(ens.state_dict()), copy.deepcopy(optimizer.state_dict()),
                    [copy.deepcopy(f.state_dict()) for f in forcings])
            losses, mses, gnorms = [[] for _ in range(K)], [[] for _ in range(K)], [[] for _ in range(K)]
            warn_k = [None] * K
            diag = _diag_due(epoch, config)
            for batch in range(config.batches_per_epoch):
                # model k's windows and noise come from its own generator, drawn in the order
                # train() draws them (starts, then noise), so each model sees its separate run's batches
                starts, noises = [], []
                for k in range(K):
                    starts.append(window_starts(n_steps, config.batch_size, config.seq_len, generators[k]))
                    if config.noise_std:
                        noises.append(torch.randn(window_shape, generator=generators[k], dtype=dtype))
                target = gather_windows(x, torch.stack(starts), config.seq_len)  # (K, B, T+1, N)
                inp = target + config.noise_std * torch.stack(noises).to(device) if config.noise_std else target
                if generic_policy or stale:
                    alphas, stale = stacked_alphas(), False
                # z_hat only where something reads it: the policy's update, or G after the epoch's last batch
                bound_due = adaptive and (n_updates + 1) % forcing.every == 0
                need_z_hat = generic_policy or bound_due or (diag and batch == config.batches_per_epoch - 1)
                optimizer.zero_grad(set_to_none=True)
                loss, mse, z_hat = ensemble_loss_and_grads(ens, inp, alphas, config.reg_weight, target,
                                                           backend=backend, need_z_hat=need_z_hat)
                gn = _per_model_grad_norms(params, K)  # (K,)
                loss_k, mse_k, gn_k = loss.tolist(), mse.tolist(), gn.tolist()
                bad = ~(np.isfinite(loss_k) & np.isfinite(gn_k))
                with torch.no_grad():
                    if bad.any() or frozen.any():
                        zero = torch.as_tensor(~(bad | frozen), dtype=dtype, device=device)  # (K,)
                        for p in params:
                            p.grad = torch.nan_to_num(p.grad) * zero.reshape(-1, *[1] * (p.ndim - 1))
                    if config.grad_clip is not None:
                        coef = (config.grad_clip / (gn + 1e-6)).clamp(max=1.0).to(dtype)  # (K,)
                        for p in params:
                            p.grad.mul_(coef.reshape(-1, *[1] * (p.ndim - 1)))
                optimizer.step()
                bad |= ~_per_model_params_finite(params, K)
                bad &= ~frozen
                n_updates += 1
                for k in np.flatnonzero(frozen):  # keep a failed run where it was restored
                    _restore(ens, optimizer, None, good, k)
                if bad.any():
                    stale = True  # a restored policy may have another alpha
                    for k in np.flatnonzero(bad):
                        recoveries[k] += 1
                        _restore(ens, optimizer, forcings[k], good, k)
                        warn_k[k] = (f"non-finite loss/gradient/parameters in epoch {epoch} (loss "
                                     f"{float(loss[k]):.3g}); restored this model to the start of the epoch "
                                     f"(the ensemble's learning rate is shared and not lowered)")
                        warnings.warn(f"ensemble model {k}: {warn_k[k]}", RuntimeWarning, stacklevel=2)
                        if recoveries[k] > config.max_recoveries:
                            frozen[k] = True
                            warn_k[k] += f"; frozen after {recoveries[k]} recoveries"
                live = np.flatnonzero(~(bad | frozen))
                if bound_due:  # AdaptiveGTF.update for the K models in one batched computation
                    G = ens.growth_bounds(z_hat, forcing.estimator).tolist()
                    for k in live:
                        forcings[k].apply_estimate(G[k])
                    stale = True
                elif generic_policy:  # a user policy: its own update, per model
                    ens.write_to(models)
                    for k in live:
                        forcings[k].update(models[k], z_hat[k], n_updates)
                for k in live:
                    losses[k].append(loss_k[k])
                    mses[k].append(mse_k[k])
                    gnorms[k].append(gn_k[k])
            epoch_G = ens.growth_bounds(z_hat).tolist() if diag and z_hat is not None else [float("nan")] * K
            scheduler.step()
            ens.write_to(models)
            elapsed = time.perf_counter() - t_start
            for k in range(K):
                record = {"epoch": epoch, "loss": float(np.mean(losses[k])) if losses[k] else float("nan"),
                          "mse": float(np.mean(mses[k])) if mses[k] else float("nan"), "alpha": forcings[k].alpha,
                          "grad_norm": float(np.mean(gnorms[k])) if gnorms[k] else float("nan"),
                          "G": epoch_G[k],
                          "lr": optimizer.param_groups[0]["lr"], "time_s": elapsed}
                if warn_k[k] is not None:
                    record["warning"] = warn_k[k]
                if val_x is not None and (epoch % config.val_every == 0 or epoch == config.epochs):
                    val = _validate(models[k], val_x, config)
                    record.update(val)
                    if "d_stsp" in val:
                        metrics[k] = val
                    best[k].offer(epoch, val, models[k])
                histories[k].append(record)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{np.nanmean([h[-1]['loss'] for h in histories]):.4g}")
            epochs_done = epoch
            stop = callback is not None and callback(epoch, [h[-1] for h in histories], models)
            if ckpt is not None and (stop or epoch % config.checkpoint_every == 0 or epoch == config.epochs):
                save(epoch, time.perf_counter() - t_start)
            if stop:
                break
    finally:
        spin.__exit__(None, None, None)
        torch.set_flush_denormal(False)
        torch.set_num_threads(threads_before)
        if bar is not None:
            bar.close()
    total = time.perf_counter() - t_start
    ens.write_to(models)
    results = [TrainResult(history=histories[k], train_time_s=total, n_updates=n_updates, epochs=epochs_done,
                           finished=epochs_done == config.epochs and not frozen[k], recoveries=int(recoveries[k]),
                           metrics=metrics[k], run_dir=None if run_dir is None else str(run_dir),
                           best_epoch=best[k].epoch, best_state=best[k].state)
               for k in range(K)]
    if config.select == "best_val":
        for m, b in zip(models, best):
            if b.state is not None:
                m.load_state_dict(b.state)
    if ckpt is not None:
        for m, s, f, res, b in zip(models, seeds, forcings, results, best):
            save_checkpoint(Path(run_dir) / f"seed{s}.pt", m, forcing=f, epoch=res.epochs,
                            n_updates=res.n_updates, history=res.history, train_config=asdict(config),
                            finished=res.finished, extra={"ensemble": str(ckpt), "seed": s},
                            best=b.state_dict())
    return results


ENSEMBLE_CHECKPOINT = "ensemble.pt"


def _read_ensemble_checkpoint(path: Path) -> dict:
    """:func:`dsrecon.checkpoint.read_checkpoint` (safe load, config parsed), and a check that it is an ensemble's."""
    state = read_checkpoint(path)
    if state.get("kind") != "ensemble":
        raise RuntimeError(f"{path} is a single-model checkpoint, not an ensemble's (ensemble.pt)")
    return state


def _check_same_ensemble(stored: dict, current: dict, path: Path) -> None:
    """A resumed ensemble must continue with the same models, seeds, forcing and settings."""
    from dsrecon.training import RESUME_IGNORED

    cur = json.loads(json.dumps(current, default=str))  # the stored form (tuples as lists, ...)
    diffs = [k for k in ("models", "seeds", "forcing") if stored[k] != cur[k]]
    diffs += [f"train.{k}" for k, v in stored["train"].items() if k not in RESUME_IGNORED and cur["train"].get(k) != v]
    if diffs:
        raise ValueError(f"cannot resume {path}: {', '.join(diffs)} differ from the stored run; resume with "
                         "the stored settings or start a new run folder")


@torch.no_grad()
def _restore(ens: EnsembleShPLRNN, optimizer, forcing: Forcing | None, good, k: int) -> None:
    """Put model k's slice (parameters, RAdam moments, forcing state) back to the epoch start."""
    params, opt_state, forcing_states = good
    for i, (name, p) in enumerate(ens.named_parameters()):
        p[k] = params[name][k]
        state, saved = optimizer.state.get(p, {}), opt_state["state"].get(i, {})
        for key in ("exp_avg", "exp_avg_sq"):
            if key in state and key in saved:
                state[key][k] = saved[key][k]
    if forcing is not None:
        forcing.load_state_dict(forcing_states[k])
