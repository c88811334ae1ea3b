r"""Training an ensemble: the loop of :func:`dsrecon.training.train` with a leading member axis.

:func:`dsrecon.training.train` runs :func:`train_members` for a :class:`dsrecon.ensemble.Ensemble`.
Member k draws its windows (and noise) from its own generator seeded ``seeds[k]``, in the order a
one-model run draws them, has its own forcing policy (its own alpha: the members may even follow
different policies) and its own per-epoch history; the K members share one RAdam optimizer over
the stacked parameters (elementwise, so no coupling) and the learning-rate schedule. The losses and
gradients come from the family's member stack (:func:`dsrecon.stacking.stack_members`: the
shPLRNN's C kernel; autograd vmapped over the members for every other family, whose one-model runs
take the same path as a one-member stack: in both cases a member is bit-identical to its separate
run, the GRU excepted).

Unlike a one-model run, a member whose loss, gradient or parameters turn non-finite does not stop
the ensemble or lower the shared learning rate: it is restored to its state at the start of the
epoch (parameters, RAdam moments, forcing), and after ``config.max_recoveries`` such events it is
frozen (its updates discarded) while its neighbours train on.
"""

from __future__ import annotations

import contextlib
import copy
import json
import time
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from dsrecon.checkpoint import atomic_write, model_spec, read_checkpoint, run_lock, save_checkpoint
from dsrecon.data import gather_windows, window_starts, window_table
from dsrecon.ensemble import Ensemble
from dsrecon.forcing import AdaptiveGTF, Forcing, default_forcing
from dsrecon.history import diag_due
from dsrecon.selection import BestByValidation
from dsrecon.stacking import make_optimizer, stack_members
from dsrecon.train_config import RESUME_IGNORED, TrainConfig, TrainResult
from dsrecon.training_common import (compute_settings, epoch_record, last_validation, lr_schedule, progress_bar,
                                     series_tensors, validate_epoch)

ENSEMBLE_CHECKPOINT = "ensemble.pt"


def member_policies(forcing, K: int) -> list[Forcing]:
    """One forcing policy per member: K deep copies of one policy, or the K policies given (copied)."""
    forcing = default_forcing() if forcing is None else forcing
    policies = [forcing] * K if isinstance(forcing, Forcing) else list(forcing)
    if len(policies) != K or not all(isinstance(f, Forcing) for f in policies):
        raise ValueError(f"forcing must be a dsrecon.forcing policy or a sequence of {K} policies (one per "
                         f"member), got {forcing!r}")
    return [copy.deepcopy(f) for f in policies]


def train_members(ensemble: Ensemble, data, config: TrainConfig, forcing=None, *, val_data=None, run_dir=None,
                  resume: bool = False, progress: bool = True, callback=None, run_meta: dict | None = None
                  ) -> TrainResult:
    """Train the K members of ``ensemble`` at once; see :func:`dsrecon.training.train`.

    ``forcing`` is one policy (each member gets a copy) or K policies; ``callback(epoch, records,
    models)`` receives the K new history records and the K member models. ``run_dir`` holds the
    ensemble's checkpoint ``ensemble.pt`` (every ``config.checkpoint_every`` epochs, when a
    callback stops the run and at the end) and, at the end, one ``seed<s>.pt`` per member
    (:func:`dsrecon.checkpoint.load_checkpoint` reads it). Returns a :class:`TrainResult` whose
    ``members`` are the K members' results.
    """
    models, K = list(ensemble.members), ensemble.K
    seeds = ensemble.window_seeds(config.seed)
    forcings = member_policies(forcing, K)
    device = torch.device(config.device)
    for m in models:
        m.to(device)
    ens = stack_members(models, config.backend)
    x, val_x = series_tensors(data, val_data, models[0], config, next(ens.parameters()).dtype, device)
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    optimizer = make_optimizer(list(ens.parameters()), config.lr_start)
    scheduler = lr_schedule(optimizer, config)
    loop = _MemberUpdates(ens, models, x, config, forcings, optimizer, generators, window_table(data, config.seq_len))
    best = [BestByValidation() for _ in range(K)]
    shared = isinstance(forcing, Forcing) or forcing is None
    run_config = {"models": [model_spec(m) for m in models], "seeds": seeds,
                  "forcing": forcings[0].config() if shared else [f.config() for f in forcings],
                  "train": asdict(config)}
    ckpt = None if run_dir is None else Path(run_dir) / ENSEMBLE_CHECKPOINT
    lock = contextlib.ExitStack()  # the run folder's lock, held until training ends
    with lock:
        if ckpt is not None:
            lock.enter_context(run_lock(ckpt.parent))
        histories, start_epoch, time_before = _open_ensemble_run(ckpt, resume, run_config, loop, scheduler, best)
        metrics = [last_validation(h) for h in histories]
        bar = progress_bar(config, start_epoch, f"train x{K}", progress)
        t_start = time.perf_counter() - time_before
        epochs_done = start_epoch
        with compute_settings(config, device), bar if bar is not None else contextlib.nullcontext():
            for epoch in range(start_epoch + 1, config.epochs + 1):
                epoch_G = loop.epoch(epoch)
                scheduler.step()
                ens.write_to(models)
                elapsed = time.perf_counter() - t_start
                for k in range(K):
                    record = epoch_record(epoch, loop.losses[k], loop.mses[k], loop.gnorms[k],
                                          alpha=forcings[k].alpha, G=epoch_G[k], lr=optimizer.param_groups[0]["lr"],
                                          time_s=elapsed, warning=loop.recovery_notes[k])
                    metrics[k] = validate_epoch(record, models[k], val_x, config, best[k]) or metrics[k]
                    histories[k].append(record)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{np.nanmean([h[-1]['loss'] for h in histories]):.4g}")
                epochs_done = epoch
                stop = callback is not None and callback(epoch, [h[-1] for h in histories], models)
                if ckpt is not None and (stop or epoch % config.checkpoint_every == 0 or epoch == config.epochs):
                    _save_ensemble(ckpt, run_config, loop, scheduler, histories, best, epoch,
                                   time.perf_counter() - t_start)
                if stop:
                    break
    total = time.perf_counter() - t_start
    ens.write_to(models)
    results = [TrainResult(history=histories[k], train_time_s=total, n_updates=loop.n_updates, epochs=epochs_done,
                           finished=epochs_done == config.epochs and not loop.frozen[k],
                           recoveries=int(loop.recoveries[k]), metrics=metrics[k],
                           run_dir=None if run_dir is None else str(run_dir), best_epoch=best[k].epoch,
                           best_state=best[k].state)
               for k in range(K)]
    if config.select == "best_val":
        for m, b in zip(models, best):
            if b.state is not None:
                m.load_state_dict(b.state)
    if ckpt is not None:
        for m, s, f, res, b in zip(models, seeds, forcings, results, best):
            save_checkpoint(Path(run_dir) / f"seed{s}.pt", m, forcing=f, epoch=res.epochs,
                            n_updates=res.n_updates, history=res.history, train_config=asdict(config),
                            finished=res.finished, extra={"ensemble": str(ckpt), "seed": s, **(run_meta or {})},
                            best=b.state_dict())
    return _ensemble_result(results, total, loop.n_updates, epochs_done, run_dir)


class _MemberUpdates:
    """The updates of K members' epochs along the member axis (the module docstring): member k's
    windows and noise from ``generators[k]``, one batched loss-and-gradient call, per-member
    gradient masking and clipping, one RAdam step, per-member restores and freezing, the forcing
    policies' updates (AdaptiveGTF's batched over the members)."""

    def __init__(self, ens, models, x, config, forcings, optimizer, generators, valid_starts=None):
        self.ens, self.models, self.x, self.config, self.forcings = ens, models, x, config, forcings
        self.valid_starts = valid_starts  # None for one series; a TrialSet's in-trial window starts
        self.optimizer, self.generators = optimizer, generators
        self.params = list(ens.parameters())  # fixed objects: restores and checkpoints write into them
        self.dtype, self.K = self.params[0].dtype, len(models)
        self.n_updates = 0
        self.recoveries, self.frozen = np.zeros(self.K, dtype=int), np.zeros(self.K, dtype=bool)
        # AdaptiveGTF members with one schedule update batched over the members; any other adapting
        # policy runs its own update per member; fixed policies have none
        first = forcings[0]
        self.adaptive = all(type(f).update is AdaptiveGTF.update
                            and (f.every, f.estimator) == (first.every, first.estimator) for f in forcings)
        self.generic_policy = any(f.adapts for f in forcings) and not self.adaptive
        # a fixed policy's alphas never change: stacked once; AdaptiveGTF's are restacked when its
        # growth-bound step or a restore ran (stale), any other policy's every update
        self.alphas, self.stale = self.stacked_alphas(), False

    def stacked_alphas(self) -> torch.Tensor:
        return torch.stack([torch.as_tensor(f.alphas(self.config.seq_len + 1), dtype=torch.float64)
                            for f in self.forcings])  # (K, T+1)

    def epoch(self, epoch: int) -> list:
        """Run one epoch's updates; returns the members' growth bounds G (NaN off the diagnostic epochs)."""
        ens, config, forcings, optimizer, K = self.ens, self.config, self.forcings, self.optimizer, self.K
        first, device, x = forcings[0], self.x.device, self.x
        good = (copy.deepcopy(ens.state_dict()), copy.deepcopy(optimizer.state_dict()),
                [copy.deepcopy(f.state_dict()) for f in forcings])
        self.losses, self.mses, self.gnorms = [[] for _ in range(K)], [[] for _ in range(K)], [[] for _ in range(K)]
        self.recovery_notes = [None] * K
        window_shape = (config.batch_size, config.seq_len + 1, x.shape[1])
        diag, z_hat = diag_due(epoch, config), None
        for batch in range(config.batches_per_epoch):
            # member k's windows and noise come from its own generator, drawn in the order
            # train() draws them (starts, then noise), so each member sees its separate run's batches
            starts, noises = [], []
            for k in range(K):
                starts.append(window_starts(x.shape[0], config.batch_size, config.seq_len, self.generators[k],
                                            self.valid_starts))
                if config.noise_std:
                    noises.append(torch.randn(window_shape, generator=self.generators[k], dtype=self.dtype))
            target = gather_windows(x, torch.stack(starts), config.seq_len)  # (K, B, T+1, N)
            inp = target + config.noise_std * torch.stack(noises).to(device) if config.noise_std else target
            if self.generic_policy or self.stale:
                self.alphas, self.stale = self.stacked_alphas(), False
            # z_hat only where something reads it: the policy's update, or G after the epoch's last batch
            bound_due = self.adaptive and first.adapts and (self.n_updates + 1) % first.every == 0
            need_z_hat = self.generic_policy or bound_due or (diag and batch == config.batches_per_epoch - 1)
            optimizer.zero_grad(set_to_none=True)
            loss, mse, z_hat = ens.loss_and_grads(inp, self.alphas, config.reg_weight, target, need_z_hat=need_z_hat)
            gn = ens.grad_norms()  # (K,)
            loss_k, mse_k, gn_k = loss.tolist(), mse.tolist(), gn.tolist()
            bad = ~(np.isfinite(loss_k) & np.isfinite(gn_k))
            _mask_gradients(self.params, bad | self.frozen, gn, config.grad_clip, self.dtype, device)
            optimizer.step()
            bad |= ~ens.params_finite()
            bad &= ~self.frozen
            self.n_updates += 1
            for k in np.flatnonzero(self.frozen):  # keep a failed member where it was restored
                _restore(ens, optimizer, None, good, k)
            if bad.any():
                self.stale = True  # a restored policy may have another alpha
                for k in np.flatnonzero(bad):
                    self._recover(k, epoch, float(loss[k]), good)
            live = np.flatnonzero(~(bad | self.frozen))
            if bound_due:  # AdaptiveGTF.update of the K members in one batched computation
                G = ens.growth_bounds(z_hat, first.estimator).tolist()
                for k in live:
                    forcings[k].apply_estimate(G[k])
                self.stale = True
            elif self.generic_policy:  # other policies: their own update, per member
                ens.write_to(self.models)
                for k in live:
                    forcings[k].update(self.models[k], z_hat[k], self.n_updates)
            for k in live:
                self.losses[k].append(loss_k[k])
                self.mses[k].append(mse_k[k])
                self.gnorms[k].append(gn_k[k])
        return ens.growth_bounds(z_hat).tolist() if diag and z_hat is not None else [float("nan")] * K

    def _recover(self, k: int, epoch: int, loss: float, good) -> None:
        """Restore member k to the epoch's start; freeze it after ``max_recoveries`` such events."""
        self.recoveries[k] += 1
        _restore(self.ens, self.optimizer, self.forcings[k], good, k)
        self.recovery_notes[k] = (f"non-finite loss/gradient/parameters in epoch {epoch} (loss {loss:.3g}); restored "
                            "this model to the start of the epoch (the ensemble's learning rate is shared and not "
                            "lowered)")
        warnings.warn(f"ensemble model {k}: {self.recovery_notes[k]}", RuntimeWarning, stacklevel=5)
        if self.recoveries[k] > self.config.max_recoveries:
            self.frozen[k] = True
            self.recovery_notes[k] += f"; frozen after {self.recoveries[k]} recoveries"


def _open_ensemble_run(ckpt: Path | None, resume: bool, run_config: dict, loop: _MemberUpdates, scheduler, best):
    """Restore an ensemble run from ``ckpt`` (``resume``), or check that a new one may start there.

    Returns the K histories, the epoch reached and the training time before this session (s).
    """
    K = loop.K
    if ckpt is not None and resume and ckpt.exists():
        state = _read_ensemble_checkpoint(ckpt)
        _check_same_ensemble(state["config"], run_config, ckpt)
        loop.ens.load_state_dict(state["ensemble"])
        loop.optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        for f, fs in zip(loop.forcings, state["forcings"]):
            f.load_state_dict(fs)
        loop.alphas = loop.stacked_alphas()
        for g, gs in zip(loop.generators, state["generators"]):
            g.set_state(gs)
        loop.n_updates = state["n_updates"]
        loop.recoveries[:], loop.frozen[:] = state["recoveries"], state["frozen"]
        if state.get("best"):
            for k in range(K):
                best[k].load_state_dict(state["best"][k])
        loop.ens.write_to(loop.models)
        return [list(h) for h in state["histories"]], state["epoch"], state["time_s"]
    if ckpt is not None and ckpt.exists():
        raise RuntimeError(f"{ckpt.parent} already holds an ensemble run; pass resume=True to continue it, "
                           "or choose a new folder")
    if resume:
        if ckpt is None:
            raise ValueError("resume=True needs run_dir, the folder of the ensemble run to continue")
        raise FileNotFoundError(f"no ensemble run to resume in {ckpt.parent}: it has no {ENSEMBLE_CHECKPOINT}; "
                                "start a new run there instead (resume=False)")
    return [[] for _ in range(K)], 0, 0.0


def _save_ensemble(ckpt: Path, run_config: dict, loop: _MemberUpdates, scheduler, histories, best, epoch: int,
                   elapsed: float) -> None:
    """The ensemble's checkpoint: stacked parameters, optimizer, schedule, forcing and generator states, histories."""
    state = {"format": 1, "kind": "ensemble", "config_json": json.dumps(run_config, default=str),
             "ensemble": loop.ens.state_dict(), "optimizer": loop.optimizer.state_dict(),
             "scheduler": scheduler.state_dict(), "forcings": [f.state_dict() for f in loop.forcings],
             "generators": [g.get_state() for g in loop.generators], "histories": histories,
             "epoch": int(epoch), "n_updates": int(loop.n_updates), "time_s": float(elapsed),
             "recoveries": [int(r) for r in loop.recoveries], "frozen": [bool(f) for f in loop.frozen],
             "best": [b.state_dict() for b in best]}
    atomic_write(ckpt, lambda fh: torch.save(state, fh))


@torch.no_grad()
def _mask_gradients(params: list, drop: np.ndarray, gn: torch.Tensor, grad_clip, dtype, device) -> None:
    """Zero the gradients of the members in ``drop`` (non-finite or frozen) and clip each member's
    gradient to norm ``grad_clip`` (``gn (K,)``, the norms before clipping)."""
    if drop.any():
        keep = torch.as_tensor(~drop, dtype=dtype, device=device)  # (K,)
        for p in params:
            p.grad = torch.nan_to_num(p.grad) * keep.reshape(-1, *[1] * (p.ndim - 1))
    if grad_clip is not None:
        coef = (grad_clip / (gn + 1e-6)).clamp(max=1.0).to(dtype=dtype, device=device)  # (K,)
        for p in params:
            p.grad.mul_(coef.reshape(-1, *[1] * (p.ndim - 1)))


def _ensemble_result(results: list, total: float, n_updates: int, epochs: int, run_dir) -> TrainResult:
    """The ensemble's TrainResult: per-epoch means over the members, the members' results in ``members``."""
    history = []
    for records in zip(*(r.history for r in results)):
        summary = {"epoch": records[0]["epoch"], "lr": records[0]["lr"], "time_s": records[0]["time_s"]}
        for key in ("loss", "mse", "grad_norm"):
            values = [r[key] for r in records if np.isfinite(r[key])]
            summary[key] = float(np.mean(values)) if values else float("nan")
        history.append(summary)
    return TrainResult(history=history, train_time_s=total, n_updates=n_updates, epochs=epochs,
                       finished=all(r.finished for r in results), recoveries=sum(r.recoveries for r in results),
                       metrics={}, run_dir=None if run_dir is None else str(run_dir), members=results)


def _read_ensemble_checkpoint(path: Path) -> dict:
    """:func:`dsrecon.checkpoint.read_checkpoint` (safe load, config parsed), and a check that it is an ensemble's."""
    state = read_checkpoint(path)
    if state.get("kind") != "ensemble":
        raise RuntimeError(f"{path} is a single-model checkpoint, not an ensemble's ({ENSEMBLE_CHECKPOINT})")
    return state


def _check_same_ensemble(stored: dict, current: dict, path: Path) -> None:
    """A resumed ensemble must continue with the same models, seeds, forcing and settings."""
    cur = json.loads(json.dumps(current, default=str))  # the stored form (tuples as lists, ...)
    diffs = [k for k in ("models", "seeds", "forcing") if stored[k] != cur[k]]
    diffs += [f"train.{k}" for k, v in stored["train"].items() if k not in RESUME_IGNORED and cur["train"].get(k) != v]
    if diffs:
        raise ValueError(f"cannot resume {path}: {', '.join(diffs)} differ from the stored run; resume with "
                         "the stored settings or start a new run folder")


@torch.no_grad()
def _restore(ens, optimizer, forcing: Forcing | None, good, k: int) -> None:
    """Put member k's slice (parameters, RAdam moments, forcing state) back to the epoch start."""
    params, opt_state, forcing_states = good
    for i, (name, p) in enumerate(ens.named_parameters()):
        p[k] = params[name][k]
        state, saved = optimizer.state.get(p, {}), opt_state["state"].get(i, {})
        for key in ("exp_avg", "exp_avg_sq"):
            if key in state and key in saved:
                state[key][k] = saved[key][k]
    if forcing is not None:
        forcing.load_state_dict(forcing_states[k])


__all__ = ["ENSEMBLE_CHECKPOINT", "member_policies", "train_members"]
