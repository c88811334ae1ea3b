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

import contextlib
import json
import math
import os
import socket
import tempfile
from pathlib import Path

import torch

from dsrecon._process import pid_alive
from dsrecon.loaders import file_mode
from dsrecon.models import make_model
from dsrecon.models.base import Model

FORMAT_VERSION = 1


def atomic_write(path, write) -> Path:
    """Call ``write(fileobj)`` on a temp file next to ``path`` and atomically move it to ``path``.

    The file gets the user's usual permissions (:func:`file_mode`), as a plain ``open`` would.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".tmp-{path.name}.")
    try:
        os.fchmod(fd, file_mode())
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


def finite_or_none(obj):
    """``obj`` with every NaN or infinite float replaced by None, through dicts, lists and tuples
    (tuples become lists), so that it writes as strict JSON (which has no NaN or Infinity)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_none(v) for v in obj]
    return obj


def write_json(path, obj) -> Path:
    """Atomic JSON write (indented, NaN allowed as in Python's json)."""
    text = json.dumps(obj, indent=2, default=str) + "\n"
    return atomic_write(path, lambda f: f.write(text.encode()))


LOCK_NAME = ".dsrecon.lock"


class RunLockedError(RuntimeError):
    """Another live process is writing into the run folder."""


def _lock_owner(lock: Path) -> dict | None:
    try:
        return json.loads(lock.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):  # half-written or foreign content: nobody can be shown to hold it
        return {}


@contextlib.contextmanager
def run_lock(folder, what: str = "run folder"):
    """Hold ``folder/.dsrecon.lock`` while writing into ``folder``; refuse if a live process holds it.

    The lock file records the holder's PID and host. A lock left by a process that no longer
    exists on this host (killed, crashed) is taken over. The same process may take the lock again
    while holding it (a CLI command that trains, then evaluates into the same folder); only the
    outermost holder removes it. Raises :class:`RunLockedError` naming the folder and the holder.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / LOCK_NAME
    me = {"pid": os.getpid(), "host": socket.gethostname()}
    for _ in range(3):  # a racing taker may win between our checks; look again
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            owner = _lock_owner(lock)
            if owner is None:
                continue  # released meanwhile
            if owner.get("pid") == me["pid"] and owner.get("host") == me["host"]:
                yield lock  # held by this process already: nested use
                return
            if owner.get("host") == me["host"] and isinstance(owner.get("pid"), int) and not pid_alive(owner["pid"]):
                lock.unlink(missing_ok=True)  # stale: its process is gone
                continue
            raise RunLockedError(
                f"{what} {folder} is in use by process {owner.get('pid', '?')} on {owner.get('host', '?')} "
                f"(lock file {lock}); wait for it to finish or stop it, or use another folder; if that process "
                f"no longer exists, delete the lock file") from None
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(me))
        break
    else:
        raise RunLockedError(f"could not take the lock {lock} of {what} {folder}: other processes keep taking "
                             "it; make sure only one command writes into this folder")
    try:
        yield lock
    finally:
        if _lock_owner(lock) == me:
            lock.unlink(missing_ok=True)


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


# the entries save_checkpoint writes; a checkpoint lacking one was not written by it (or is damaged)
CHECKPOINT_KEYS = ("model", "optimizer", "scheduler", "forcing", "generator", "epoch", "n_updates", "history",
                   "finished")
ZIP_MAGIC = b"PK\x03\x04"  # torch.save's file format is a zip archive


def read_checkpoint(path) -> dict:
    """The raw state dict of a checkpoint (safe load), with ``config`` parsed from its JSON.

    Raises ``FileNotFoundError`` for a missing file and ``RuntimeError`` naming the file and what
    is wrong with it: empty (an interrupted copy), not a torch file (e.g. text), truncated or
    corrupt, not written by dsrecon, or missing entries.
    """
    path = Path(path)
    if path.is_dir():
        raise RuntimeError(f"{path} is a folder, not a checkpoint file; give the .pt file (a run folder "
                           "keeps it as checkpoints/last.pt) or the run folder itself where a command takes one")
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}; a run folder keeps them under checkpoints/")
    damaged = "use an earlier copy, or rerun the training that wrote it"
    with open(path, "rb") as f:
        head = f.read(4)
    if not head:
        raise RuntimeError(f"cannot read checkpoint {path}: the file is empty (0 bytes), e.g. an interrupted "
                           f"copy; {damaged}")
    if head != ZIP_MAGIC:
        raise RuntimeError(f"cannot read checkpoint {path}: not a torch checkpoint file (it starts with "
                           f"{head!r}, a torch.save file with b'PK\\x03\\x04'); give a .pt file written by dsrecon")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, or pickled objects a safe load refuses
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise RuntimeError(f"cannot read checkpoint {path}: the file is truncated, corrupt or holds objects a "
                           f"safe load refuses ({type(err).__name__}: {reason}); {damaged}") from err
    if not isinstance(state, dict) or "config_json" not in state:
        raise RuntimeError(f"{path} is not a dsrecon checkpoint (no embedded config); give a file written by "
                           "dsrecon.save_checkpoint or `dsrecon fit`")
    try:
        config = json.loads(state.pop("config_json"))
    except (TypeError, ValueError) as err:
        raise RuntimeError(f"{path}: the embedded config is damaged ({type(err).__name__}: {err}); {damaged}") from None
    if not isinstance(config, dict):
        raise RuntimeError(f"{path}: the embedded config is not a JSON object; {damaged}")
    state["config"] = config
    return state


def check_resumable(state: dict, path) -> None:
    """Raise unless ``state`` (from :func:`read_checkpoint`) holds everything a resumed run restores.

    A checkpoint saved with only the model (``save_checkpoint(path, model)``) can be evaluated but
    not resumed: its optimizer, schedule and window-generator states are missing.
    """
    _check_model_entries(state, path)
    missing = [k for k in CHECKPOINT_KEYS if k not in state or (state[k] is None and k != "forcing")]
    if missing:
        raise RuntimeError(f"cannot resume from {path}: it has no {', '.join(missing)} state (it was saved "
                           "without the training state, e.g. by save_checkpoint(path, model)); evaluate it, or "
                           "start a new run in a new folder")


def _check_model_entries(state: dict, path) -> None:
    spec = state["config"].get("model")
    if not (isinstance(spec, dict) and "name" in spec and "config" in spec and "model" in state):
        raise RuntimeError(f"{path} holds no single-model dsrecon checkpoint (no model spec or weights"
                           f"{', it is an ensemble checkpoint' if state.get('kind') == 'ensemble' else ''}); "
                           "give a checkpoint written by `dsrecon fit` or dsrecon.save_checkpoint")


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
    _check_model_entries(state, path)
    spec = state["config"]["model"]
    try:
        model = make_model(spec["name"], **spec["config"])
        model.load_state_dict(state.pop("model"))
    except (ValueError, TypeError, RuntimeError) as err:  # unknown model, or weights of another shape
        first = str(err).splitlines()[0]
        raise RuntimeError(f"{path}: cannot rebuild its model {spec['name']!r} ({type(err).__name__}: {first}); "
                           "the checkpoint was written by an incompatible dsrecon version or is damaged") from err
    if device is not None:
        model.to(device)
    return model, state


__all__ = ["save_checkpoint", "load_checkpoint", "read_checkpoint", "check_resumable", "atomic_write", "write_json",
           "model_spec", "run_lock", "RunLockedError"]
