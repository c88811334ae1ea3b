r"""``train_ensemble``: K seeds of one shPLRNN configuration trained in one batched computation.

The loop is :func:`dsrecon.training.train`'s, with a leading model axis: model k draws its windows
(and noise) from its own generator seeded ``seeds[k]``, has its own copy of the forcing policy
(its own adaptive alpha) and its own per-epoch history; the K models share one RAdam optimizer
over stacked parameters (elementwise, so no coupling) and the learning-rate schedule.
"""

from __future__ import annotations

import copy
import time
import warnings
from typing import Sequence

import numpy as np
import torch

from dsrecon.fast.ensemble import EnsembleShPLRNN, ensemble_loss_and_grads
from dsrecon.forcing import AdaptiveGTF, Forcing, growth_bound
from dsrecon.models.plrnn import ShPLRNN


def _per_model_grad_norms(ens: EnsembleShPLRNN) -> torch.Tensor:
    """``(K,)`` Euclidean norm of each model's gradient over all its parameters."""
    sq = torch.zeros(ens.K, dtype=torch.float64, device=ens.A.device)
    for p in ens.parameters():
        if p.grad is not None:
            sq += (p.grad.double() ** 2).reshape(ens.K, -1).sum(1)
    return sq.sqrt()


def train_ensemble(models: Sequence[ShPLRNN], data, config=None, forcing: Forcing | None = None, *,
                   seeds: Sequence[int] | None = None, val_data=None, progress: bool = False,
                   backend: str = "auto", callback=None) -> list:
    """Train K shPLRNNs of one configuration at once; equal to K :func:`dsrecon.training.train` runs.

    Parameters
    ----------
    models : sequence of ShPLRNN
        K models with the same ``config()`` (e.g. built with seeds 0..K-1); trained in place.
    data : Trajectory or array ``(T, N)``
        Training series, shared by all models.
    config : TrainConfig, optional
        As for ``train``; ``config.seed`` is replaced by ``seeds[k]`` for model k, and
        ``config.backend`` is ignored (the ensemble always runs the fused kernel).
    forcing : Forcing, optional
        Policy (default adaptive GTF); each model gets its own deep copy.
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

    Returns
    -------
    list of TrainResult
        One per model, as ``train`` returns; ``train_time_s`` is the shared wall time of the
        ensemble, ``run_dir`` is None (save with :func:`dsrecon.checkpoint.save_checkpoint`).

    Notes
    -----
    A model whose loss, gradient or parameters become non-finite is restored to its state at the
    start of the epoch (parameters and optimizer moments), as ``train`` does, but the ensemble's
    step count and learning rate are shared, so that model's run then differs from a separate run
    (which would lower its own learning rate); the history records a ``warning``. A run that fails
    ``config.max_recoveries`` times is frozen (its gradients zeroed) and reported. Runs that stay
    finite, the normal case, equal separate runs. Checkpointing and resuming are not supported
    here: use ``train`` for runs that must resume.
    """
    from dsrecon.data import gather_windows, window_starts
    from dsrecon.training import TrainConfig, TrainResult, _as_series, _diag_due, _validate

    config = TrainConfig() if config is None else config
    models = list(models)
    ens = EnsembleShPLRNN(models)
    K = ens.K
    seeds = [config.seed + k for k in range(K)] if seeds is None else [int(s) for s in seeds]
    if len(seeds) != K:
        raise ValueError(f"need one seed per model, {K}, got {len(seeds)}")
    forcing = AdaptiveGTF() if forcing is None else forcing
    if not isinstance(forcing, Forcing):
        raise ValueError(f"forcing must be a dsrecon.forcing policy, got {type(forcing).__name__}")
    forcings = [copy.deepcopy(forcing) for _ in range(K)]
    device = torch.device(config.device)
    ens.to(device)
    for m in models:
        m.to(device)
    dtype = ens.A.dtype
    x = torch.as_tensor(_as_series(data, models[0], "data", config.seq_len + 1), dtype=dtype, device=device)
    val_x = None
    if val_data is not None:
        val_x = torch.as_tensor(_as_series(val_data, models[0], "val_data", 2), dtype=dtype, device=device)
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    optimizer = torch.optim.RAdam(ens.parameters(), lr=config.lr_start)
    gamma = (config.lr_end / config.lr_start) ** (1.0 / config.epochs)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=gamma)
    adaptive = [isinstance(f, AdaptiveGTF) for f in forcings]
    fixed_alphas = [None if ad else f.alphas(config.seq_len + 1) for f, ad in zip(forcings, adaptive)]
    fixed_stack = None if any(adaptive) else torch.stack(
        [torch.as_tensor(a, dtype=torch.float64) for a in fixed_alphas])  # (K, T+1), constant over the run
    n_steps = x.shape[0]
    window_shape = (config.batch_size, config.seq_len + 1, x.shape[1])
    histories = [[] for _ in range(K)]
    metrics = [{} for _ in range(K)]
    recoveries = np.zeros(K, dtype=int)
    frozen = np.zeros(K, dtype=bool)
    n_updates = 0
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.epochs, desc=f"train x{K}", unit="epoch", dynamic_ncols=True)
    torch.set_flush_denormal(True)  # as train(): subnormal moments late in a run cost 10-100x
    t_start = time.perf_counter()
    epochs_done = 0
    try:
        for epoch in range(1, config.epochs + 1):
            good = (copy.deepcopy(ens.state_dict()), copy.deepcopy(optimizer.state_dict()),
                    [copy.deepcopy(f.state_dict()) for f in forcings])
            losses, mses, gnorms = [[] for _ in range(K)], [[] for _ in range(K)], [[] for _ in range(K)]
            warn_k = [None] * K
            z_hat = None
            for _ in range(config.batches_per_epoch):
                # model k's windows and noise come from its own generator, drawn in the order
                # train() draws them (starts, then noise), so each model sees its separate run's batches
                starts, noises = [], []
                for k in range(K):
                    starts.append(window_starts(n_steps, config.batch_size, config.seq_len, generators[k]))
                    if config.noise_std:
                        noises.append(torch.randn(window_shape, generator=generators[k], dtype=dtype))
                target = gather_windows(x, torch.stack(starts), config.seq_len)  # (K, B, T+1, N)
                inp = target + config.noise_std * torch.stack(noises).to(device) if config.noise_std else target
                alphas = fixed_stack if fixed_stack is not None else torch.stack(
                    [torch.as_tensor(f.alphas(config.seq_len + 1) if a is None else a, dtype=torch.float64)
                     for f, a in zip(forcings, fixed_alphas)])  # (K, T+1)
                optimizer.zero_grad(set_to_none=True)
                loss, mse, z_hat = ensemble_loss_and_grads(ens, inp, alphas, config.reg_weight, target,
                                                           backend=backend)
                gn = _per_model_grad_norms(ens)  # (K,)
                bad = ~(torch.isfinite(loss.double().cpu()) & torch.isfinite(gn.cpu())).numpy()
                with torch.no_grad():
                    if bad.any() or frozen.any():
                        zero = torch.as_tensor(~(bad | frozen), dtype=dtype, device=device)  # (K,)
                        for p in ens.parameters():
                            p.grad = torch.nan_to_num(p.grad) * zero.reshape(-1, *[1] * (p.ndim - 1))
                    if config.grad_clip is not None:
                        coef = (config.grad_clip / (gn + 1e-6)).clamp(max=1.0).to(dtype)  # (K,)
                        for p in ens.parameters():
                            p.grad.mul_(coef.reshape(-1, *[1] * (p.ndim - 1)))
                optimizer.step()
                with torch.no_grad():
                    bad |= ~torch.stack([torch.isfinite(p).reshape(K, -1).all(1) for p in ens.parameters()]
                                        ).all(0).cpu().numpy()
                bad &= ~frozen
                n_updates += 1
                for k in np.flatnonzero(frozen):  # keep a failed run where it was restored
                    _restore(ens, optimizer, None, good, k)
                if bad.any():
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
                if any(adaptive) and any(n_updates % f.every == 0 for f, ad in zip(forcings, adaptive) if ad):
                    ens.write_to(models)
                loss_k, mse_k, gn_k = loss.tolist(), mse.tolist(), gn.tolist()
                for k in range(K):
                    if bad[k] or frozen[k]:
                        continue
                    forcings[k].update(models[k], z_hat[k], n_updates)
                    losses[k].append(loss_k[k])
                    mses[k].append(mse_k[k])
                    gnorms[k].append(gn_k[k])
            scheduler.step()
            ens.write_to(models)
            elapsed = time.perf_counter() - t_start
            for k in range(K):
                record = {"epoch": epoch, "loss": float(np.mean(losses[k])) if losses[k] else float("nan"),
                          "mse": float(np.mean(mses[k])) if mses[k] else float("nan"), "alpha": forcings[k].alpha,
                          "grad_norm": float(np.mean(gnorms[k])) if gnorms[k] else float("nan"),
                          "G": growth_bound(models[k], z_hat[k]) if z_hat is not None and _diag_due(epoch, config)
                          else float("nan"),
                          "lr": optimizer.param_groups[0]["lr"], "time_s": elapsed}
                if warn_k[k] is not None:
                    record["warning"] = warn_k[k]
                if val_x is not None and (epoch % config.val_every == 0 or epoch == config.epochs):
                    val = _validate(models[k], val_x, config)
                    record.update(val)
                    if "d_stsp" in val:
                        metrics[k] = val
                histories[k].append(record)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{np.nanmean([h[-1]['loss'] for h in histories]):.4g}")
            epochs_done = epoch
            if callback is not None and callback(epoch, [h[-1] for h in histories], models):
                break
    finally:
        torch.set_flush_denormal(False)
        if bar is not None:
            bar.close()
    total = time.perf_counter() - t_start
    ens.write_to(models)
    return [TrainResult(history=histories[k], train_time_s=total, n_updates=n_updates, epochs=epochs_done,
                        finished=epochs_done == config.epochs and not frozen[k], recoveries=int(recoveries[k]),
                        metrics=metrics[k])
            for k in range(K)]


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
