"""The folder of a one-model training run: ``config.json``, ``history.csv``, ``checkpoints/last.pt``.

:func:`open_run` starts a run in a folder or restores one from its last checkpoint (parameters,
optimizer, schedule, forcing state, window generator, history), so that a resumed run equals an
uninterrupted one. A folder that holds a checkpointed run is never overwritten.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from dsrecon.checkpoint import check_resumable, model_spec, read_checkpoint, run_lock, save_checkpoint, write_json
from dsrecon.history import write_history_csv
from dsrecon.train_config import RESUME_IGNORED


class RunFolder:
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


@dataclass
class RunState:
    """Where a run stands: its history so far, epochs and updates done, training time before this session (s)."""

    history: list = field(default_factory=list)
    epoch: int = 0
    n_updates: int = 0
    time_before: float = 0.0


def open_run(run_dir, resume: bool, lock: contextlib.ExitStack, *, model, forcing, config, optimizer, scheduler,
             generator: torch.Generator, best, run_meta, preflight) -> tuple[RunFolder | None, RunState]:
    """Take the run folder (its lock entered into ``lock``) and start or restore the run in it.

    Without ``run_dir`` there is nothing to open (``resume=True`` is then an error). With a
    checkpoint and ``resume``, the model, optimizer, scheduler, forcing, generator and ``best`` are
    restored in place; a checkpoint without ``resume`` is refused. Otherwise the run starts at
    epoch 0: ``preflight()`` runs first (a backend that cannot train the model fails before the
    folder is written), then config.json is written.
    """
    if run_dir is None:
        if resume:
            raise ValueError("resume=True needs run_dir, the folder of the run to continue")
        return None, RunState()
    run = RunFolder(run_dir)
    run.check_writable()
    lock.enter_context(run_lock(run.dir))
    cfg_dict = asdict(config)
    if resume and run.exists():
        state = read_checkpoint(run.checkpoint)
        check_resumable(state, run.checkpoint)
        check_same_run(state["config"], model, forcing, cfg_dict, run.checkpoint)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        forcing.load_state_dict(state["forcing"] or {})
        generator.set_state(state["generator"])
        if state.get("best"):
            best.load_state_dict(state["best"])
        history = state["history"]
        return run, RunState(history, state["epoch"], state["n_updates"], history[-1]["time_s"] if history else 0.0)
    if run.exists():
        raise RuntimeError(f"run folder {run.dir} already holds a run; pass resume=True "
                           f"(CLI: --resume {run.dir}) to continue it, or choose a new folder (CLI: --out)")
    if resume:
        if not run.started():
            raise FileNotFoundError(f"no run to resume in {run.dir}: it has no checkpoints/last.pt and no "
                                    "config.json; start a new run there instead (CLI: --out DIR, no --resume)")
        check_same_run(_read_run_config(run.config), model, forcing, cfg_dict, run.config)
        warnings.warn(f"{run.dir} has no checkpoint yet (its run stopped before the first one): training starts "
                      "at epoch 0 with the stored settings", RuntimeWarning, stacklevel=3)
    preflight()
    run.history.unlink(missing_ok=True)  # epochs of a run that never reached a checkpoint
    write_json(run.config, {"model": model_spec(model), "forcing": forcing.config(), "train": cfg_dict,
                            "extra": run_meta})
    return run, RunState()


def record_epoch(run: RunFolder | None, state: RunState, finished: bool, *, model, forcing, config, optimizer,
                 scheduler, generator, best, run_meta) -> None:
    """Write history.csv after every epoch and the checkpoint every ``checkpoint_every`` epochs and at the end."""
    if run is None:
        return
    write_history_csv(run.history, state.history)
    if state.epoch % config.checkpoint_every == 0 or finished:
        save_checkpoint(run.checkpoint, model, optimizer=optimizer, scheduler=scheduler, forcing=forcing,
                        generator=generator, epoch=state.epoch, n_updates=state.n_updates, history=state.history,
                        train_config=asdict(config), finished=finished, extra=run_meta, best=best.state_dict())


def _read_run_config(path: Path) -> dict:
    try:
        stored = json.loads(path.read_text())
        stored["model"], stored["forcing"], stored["train"]  # noqa: B018 (presence check)
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise RuntimeError(f"cannot resume from {path}: unreadable run config ({type(err).__name__}: {err}); "
                           "start a new run in a new folder") from None
    return stored


def check_same_run(stored: dict, model, forcing, cfg: dict, path) -> None:
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


__all__ = ["RunFolder", "RunState", "open_run", "record_epoch", "check_same_run"]
