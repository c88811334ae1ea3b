"""Checkpoints: atomic writes, safe loading, and a JSON config that rebuilds the model.

A checkpoint is one ``torch.save`` file holding only tensors and primitive containers, so it loads
with ``torch.load(weights_only=True)`` (no pickled code runs on load). It carries its own JSON
config string, so a single ``.pt`` file is enough to rebuild the model; the trainer also writes the
same config to ``config.json`` in the run folder for humans and for ``dsrecon fit --resume``.

Writes are atomic: the bytes go to a temporary file in the same folder, are flushed and fsynced,
then ``os.replace`` swaps it in. A process killed mid-write leaves the previous checkpoint intact
(at worst a stray ``.tmp-*`` file, which later writes clean up).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch

from dsrecon.models import make_model
from dsrecon.models.base import Model

FORMAT_VERSION = 1


def atomic_write(path, write) -> Path:
    """Call ``write(fileobj)`` on a temp file next to ``path`` and atomically move it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".tmp-{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:  # some filesystems do not allow fsync on directories
        pass
    return path


def write_json(path, obj) -> Path:
    """Atomic JSON write (indented, NaN allowed as in Python's json)."""
    text = json.dumps(obj, indent=2, default=str) + "\n"
    return atomic_write(path, lambda f: f.write(text.encode()))


def _clean_stale_temps(folder: Path, name: str) -> None:
    for stale in folder.glob(f".tmp-{name}.*"):
        try:
            stale.unlink()
        except OSError:
            pass


def model_spec(model: Model) -> dict:
    """``{"name", "config"}``: enough for ``make_model(name, **config)`` to rebuild ``model``."""
    return {"name": model.name, "config": model.config()}


def save_checkpoint(path, model: Model, *, optimizer=None, scheduler=None, forcing=None,
                    generator: torch.Generator | None = None, epoch: int = 0, n_updates: int = 0,
                    history=(), train_config: dict | None = None, finished: bool = False,
                    extra: dict | None = None, best: dict | None = None) -> Path:
    """Atomically save a training state that ``load_checkpoint`` restores exactly.

    Parameters
    ----------
    path : str or Path
        Target file (conventionally ``.pt``); parent folders are created.
    model : Model
        Its ``state_dict`` and ``{"name", "config"}`` (as a JSON string) are stored.
    optimizer, scheduler : optional
        Their ``state_dict()`` (tensors and primitives).
    forcing : dsrecon.forcing.Forcing, optional
        ``config()`` (to rebuild) and ``state_dict()`` (e.g. the adaptive alpha).
    generator : torch.Generator, optional
        Its state, a uint8 tensor, so window sampling continues where it stopped.
    epoch, n_updates : int
        Completed epochs and parameter updates.
    history : list of dict
        Per-epoch records (floats, ints, strings).
    train_config : dict, optional
        The ``TrainConfig`` as a dict.
    finished : bool
        Whether the run completed all its epochs.
    extra : dict, optional
        Further primitive data (e.g. the data source of a CLI run).
    best : dict, optional
        :meth:`dsrecon.selection.BestByValidation.state_dict`: the best-validated parameters so far.

    Returns
    -------
    Path
        ``path``.
    """
    path = Path(path)
    config = {"format": FORMAT_VERSION, "model": model_spec(model),
              "forcing": forcing.config() if forcing is not None else None,
              "train": train_config, "extra": extra}
    state = {
        "format": FORMAT_VERSION,
        "config_json": json.dumps(config, default=str),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "forcing": forcing.state_dict() if forcing is not None else None,
        "generator": generator.get_state() if generator is not None else None,  # uint8 tensor
        "epoch": int(epoch),
        "n_updates": int(n_updates),
        "history": [dict(r) for r in history],
        "finished": bool(finished),
        "best": best,
    }
    atomic_write(path, lambda f: torch.save(state, f))
    _clean_stale_temps(path.parent, path.name)
    return path


def read_checkpoint(path) -> dict:
    """The raw state dict of a checkpoint (safe load), with ``config`` parsed from its JSON."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}; a run folder keeps them under checkpoints/")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated or foreign file
        raise RuntimeError(f"cannot read checkpoint {path}: {err}") from err
    if not isinstance(state, dict) or "config_json" not in state:
        raise RuntimeError(f"{path} is not a dsrecon checkpoint (no embedded config)")
    state["config"] = json.loads(state.pop("config_json"))
    return state


def load_checkpoint(path, *, device=None) -> tuple[Model, dict]:
    """Rebuild the model of a checkpoint and return it with the stored training state.

    Parameters
    ----------
    path : str or Path
        A file written by :func:`save_checkpoint`.
    device : str or torch.device, optional
        Where to put the model (default CPU).

    Returns
    -------
    model : Model
        The rebuilt model with the stored parameters.
    state : dict
        ``config`` (model/forcing/train/extra specs), ``optimizer``, ``scheduler``, ``forcing``,
        ``generator`` (uint8 tensor or None), ``epoch``, ``n_updates``, ``history``, ``finished``.
    """
    state = read_checkpoint(path)
    spec = state["config"]["model"]
    model = make_model(spec["name"], **spec["config"])
    model.load_state_dict(state.pop("model"))
    if device is not None:
        model.to(device)
    return model, state


__all__ = ["save_checkpoint", "load_checkpoint", "read_checkpoint", "atomic_write", "write_json", "model_spec"]
