"""``dsrecon.fit``: from a time series to a :class:`~dsrecon.reconstruction.Reconstruction`, the whole
pipeline that ``dsrecon fit`` runs (the command line only parses its options and calls this).

1. **Look at the data first** (``dsrecon.inspection``): T, N, dt, time scales, lambda_max, noise.
2. **Split, then standardize** (``dsrecon.preparation``): a file or array is split chronologically
   (or its ``test`` series taken) and z-scored with the training part's statistics; a benchmark
   system is simulated as an independent training and test trajectory, already z-scored.
3. **Embed and size**: a scalar or two-channel series is delay-embedded (mutual information, Cao);
   more than 16 channels get a latent size from their principal components.
4. **Train** (``dsrecon.train``) with the one set of defaults of :mod:`dsrecon.defaults`.
5. **Evaluate** on the held-out part (``dsrecon.evaluate``) and return a ``Reconstruction``.

With ``run_dir`` every step leaves its file: ``data_summary.json``, ``config.json``,
``history.csv``, ``checkpoints/last.pt``, ``metrics.json``, plots, and ``reconstruction.pt``
(:func:`dsrecon.load_reconstruction`). ``resume=RUN_DIR`` continues such a run where its last
checkpoint stopped. Errors name the command-line options; each keyword argument is its option
without the dashes (``--latent-dim`` is ``latent_dim``).
"""

from __future__ import annotations

import json
import math
import time
import warnings
from dataclasses import asdict, replace
from importlib import import_module
from pathlib import Path

import numpy as np
import torch

from dsrecon import defaults
from dsrecon.checkpoint import LOCK_NAME, check_resumable, read_checkpoint, run_lock, write_json
from dsrecon.data import Trajectory
from dsrecon.trials import TrialSet, continuous_series
from dsrecon.reconstruction import FILE_NAME, Reconstruction
from dsrecon.transform import DataTransform

__all__ = ["fit", "SYSTEM_NAMES", "new_run_dir"]

SYSTEM_NAMES = ("lorenz63", "rossler", "lorenz96")
N_ANCHORS = 8  # training observations kept as starting points (generate, lyapunov)


def fit(data=None, *, test=None, model: str = "shplrnn", latent_dim: int | None = None,
        hidden_dim: int = defaults.HIDDEN_DIM, clipped: bool = True, observation: str | None = None,
        forcing: str = defaults.FORCING, alpha: float | None = None, tau: int | None = None,
        epochs: int = defaults.EPOCHS, batches_per_epoch: int = 50, batch_size: int = 16, seq_len: int | str = 200,
        lr: float = defaults.LR_START, lr_end: float = defaults.LR_END, seed: int = defaults.SEED,
        device: str = "cpu", val_every: int = 25, backend: str = "auto", threads: int | None = 1,
        select: str = defaults.SELECT, val_starts: int = defaults.VAL_STARTS, noise_std: float = 0.0,
        n_steps: int = 100_000, noise: float = 0.0, test_fraction: float = 0.2, test_trials=None, dt: float | None = None,
        embed: str = "auto", eval_config=None, run_dir=None, resume=None, progress: bool = True,
        verbose: bool = True, budget: float | str | None = defaults.BUDGET_S) -> Reconstruction:
    """Fit a model to a time series and return the :class:`Reconstruction` (the pipeline above).

    Parameters
    ----------
    data : str, path, array ``(T, N)`` / ``(T,)``, Trajectory, or trials
        A benchmark system (``"lorenz63"``, ``"rossler"``, ``"lorenz96"``: an independent training
        and test trajectory are simulated, ``n_steps`` each, z-scored, with ``noise``), or anything
        ``dsrecon.load`` reads (a file, ``"santafe"``, an array), in the data's own units. Trials
        (a :class:`~dsrecon.trials.TrialSet`, a list of arrays, a 3-d array ``(trials, T, N)``, a
        folder or an npz with several arrays) train on windows inside the trials, standardized
        with statistics pooled over the training trials; the test part is the last
        ``test_fraction`` of every trial, or whole trials with ``test_trials``, and is scored per
        trial and pooled (``dsrecon.evaluate``).
        Omit it with ``resume``.
    test : same kinds as ``data``, optional
        Held-out data in the same units; default: the last ``test_fraction`` of ``data``.
    model : str
        Registered model name (``dsrecon.MODELS``).
    latent_dim, hidden_dim, clipped, observation
        shPLRNN size and form: ``M`` (default ``max(N, 10)``, or from the principal components
        of more than 16 channels, :func:`dsrecon.preparation.choose_latent`), ``L`` (50), clipped,
        ``"identity"`` or ``"affine"`` (affine when ``M < N``). ``hidden_dim`` is also the
        hidden width of the other models.
    forcing : {"gtf", "agtf", "stf", "tf", "none"}
    alpha : float, optional
        GTF alpha (default 0.1) or adaptive GTF's starting alpha (default 1).
    tau : int, optional
        STF interval in steps (default ``ln 2 / lambda_max`` of the data).
    epochs, batches_per_epoch, batch_size, seq_len, lr, lr_end, seed, device, val_every, backend, threads
        ``TrainConfig`` fields (``lr`` is ``lr_start``); defaults :mod:`dsrecon.defaults`.
        ``seq_len="auto"``: the window length from the data's mutual-information time
        (:func:`dsrecon.preparation.choose_seq_len`).
    select, val_starts, noise_std
        ``TrainConfig`` fields: ``select="best_val"`` (default, :data:`dsrecon.defaults.SELECT`) keeps
        the parameters of the validation epoch whose free runs (``val_starts`` of them, default 8,
        from states spread over the validation series) scored best, instead of the last ones. The validation series is then the last
        ``VALIDATION_FRACTION`` of the training part (of its longest trial), never the test part, so
        the test scores stay unbiased; with ``"last"`` the validations are made on the test part and
        only recorded. ``noise_std``: Gaussian noise (standardized units) added to the windows that
        feed the initial state and the forcing signal.
    n_steps, noise : simulated systems only
    test_trials : int or list of int, optional
        Trials only: hold out these whole trials (an int k: the last k) instead of the tails.
    test_fraction, dt, embed : data files and arrays only
        Held-out final share (0.2; of every trial for trials); sampling interval (default: the file's, else unknown and
        exponents per step); ``"auto"``, ``"none"`` or ``"D:TAU"`` (``dsrecon.preparation.parse_embed``).
    eval_config : EvalConfig, optional
        Settings of the final evaluation on the held-out data (default: ``EvalConfig()``, the
        GTF paper's protocol with the model's Lyapunov spectrum).
    run_dir : str or Path, optional
        Folder for the run's files (none written without it); must be new, empty, or a run that
        stopped before its first checkpoint.
    resume : str or Path, optional
        Continue the run in this folder with its stored settings (give nothing else but
        ``device``, ``threads``, ``progress``, ``verbose``).
    progress, verbose : bool
        Progress bar; printed summary of the data, the choices and the scores.
    budget : float, str or None
        Training-time budget (seconds, or ``"90s"``, ``"10m"``, ``"1.5h"``; default
        ``dsrecon.defaults.BUDGET_S``, 10 minutes; None: no budget). The time per epoch is measured on
        a few updates before training (:mod:`dsrecon.budget`) and printed; when ``epochs`` would take
        longer, fewer epochs are trained, with a warning. Not applied to ``resume``.

    Returns
    -------
    Reconstruction
        ``reconstruction.diverged`` says why a model counts as diverged (then a warning is issued
        too; ``dsrecon fit`` exits with status 1).
    """
    from dsrecon._device import check_device
    from dsrecon.forcing import make_forcing
    from dsrecon.models import make_model
    from dsrecon.training import TrainConfig

    check_device(device, "--device")
    say = print if verbose else (lambda *a, **k: None)
    if resume is not None:
        if data is not None or run_dir is not None or test is not None:
            raise ValueError("--resume RUN_DIR continues the stored run: give no DATA and no --out")
        run = _check_folder(resume, "--resume")
        stored = _stored_config(run)
        data_spec = stored["extra"]["data"]
        if data_spec["kind"] == "array":
            raise ValueError(f"--resume {run}: the run was fitted on an in-memory array, which the run folder does "
                             "not hold; resume it from Python with dsrecon.train(..., run_dir=..., resume=True)")
        train_data, test_data = _load_data(data_spec)
        raw_train, summary, transform = None, _read_summary(run), _stored_transform(stored["extra"], train_data)
        net = make_model(stored["model"]["name"], **stored["model"]["config"])
        policy = make_forcing(**stored["forcing"])
        cfg = TrainConfig.from_dict({**stored["train"], "device": device, "threads": threads})
        run_meta = stored["extra"]
        settings_extra = {k: summary.get(k) for k in ("embedding", "latent") if k in summary}
    else:
        if data is None:
            raise ValueError("give DATA (a system name such as lorenz63, or a data file), or --resume RUN_DIR")
        if run_dir is not None:
            _check_new_run_folder(Path(run_dir))
        data_spec, source = _data_spec(data, test, n_steps=n_steps, noise=noise, seed=seed,
                                       test_fraction=test_fraction, dt=dt, embed=embed, test_trials=test_trials)
        train_data, test_data, raw_train, summary, latent = _prepare(data_spec, source, model, embed, latent_dim,
                                                                     observation, say)
        transform = _transform(data_spec, raw_train, train_data)
        net = make_model(model, **_model_kwargs(model, train_data.n_dims, latent, hidden_dim, seed, latent_dim,
                                                clipped, observation))
        policy = _forcing(forcing, alpha, tau, train_data, say)
        if seq_len == "auto":
            from dsrecon.preparation import choose_seq_len

            seq_len, why = choose_seq_len(summary["data"].get("mi_time"), train_data.n_steps, 200)
            say(f"windows: seq_len = {seq_len} ({why})")
            summary["seq_len"] = {"seq_len": seq_len, "reason": why}
        elif isinstance(seq_len, str):
            raise ValueError(f"seq_len must be a number of steps or 'auto', got {seq_len!r}")
        cfg = TrainConfig(epochs=epochs, batches_per_epoch=batches_per_epoch, batch_size=batch_size,
                          seq_len=seq_len, lr_start=lr, lr_end=min(lr_end, lr), seed=seed, device=device,
                          val_every=val_every, backend=backend, threads=threads, select=select,
                          val_starts=val_starts, noise_std=noise_std)
        run_meta = _run_meta(data_spec, raw_train)
        settings_extra = {k: summary[k] for k in ("embedding", "latent", "seq_len") if k in summary}
        if budget is not None:
            cfg, settings_extra["budget"] = _fit_budget(net, train_data, cfg, policy, budget, say)
        if run_dir is not None:
            run = Path(run_dir)
            if not ((run / "config.json").exists() or (run / "checkpoints" / "last.pt").exists()):
                write_json(run / "data_summary.json", summary)  # an existing run is refused by train()
        else:
            run = None
    return _train_and_finish(net, policy, cfg, train_data, test_data, transform, summary, settings_extra,
                             run_meta, run, resume is not None, progress, say, eval_config)


def new_run_dir(name: str, root="runs") -> Path:
    """A new folder ``root/<name>-<YYYYmmdd-HHMMSS>`` (``-1``, ``-2``, ... when taken)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path, k = Path(root) / f"{name}-{stamp}", 1
    while path.exists():
        path, k = Path(root) / f"{name}-{stamp}-{k}", k + 1
    return path


# --------------------------------------------------------------------------- data
def _data_spec(data, test, *, n_steps, noise, seed, test_fraction, dt, embed, test_trials=None) -> tuple[dict, tuple]:
    """The JSON data spec a run records (it reloads the data for ``--resume`` and ``dsrecon evaluate``)
    and the in-memory (train, test) sources for array input (None for names and files)."""
    import os

    if isinstance(data, (str, os.PathLike)) and str(data).lower() in SYSTEM_NAMES:
        key = str(data).lower()
        if dt is not None:
            raise ValueError(f"--dt applies to data files; {key} is simulated at its own dt")
        if test is not None:
            raise ValueError(f"test= applies to data files and arrays; {key} gets an independent simulated test "
                             "trajectory")
        if embed != "auto":
            raise ValueError(f"--embed applies to data files; a benchmark system ({key}) is fully observed")
        if test_trials is not None:
            raise ValueError(f"--test-trials applies to data in trials; {key} is one simulated series")
        return {"kind": "system", "source": key, "n_steps": n_steps, "seed": seed, "noise": noise}, (None, None)
    if test_trials is not None and test is not None:
        raise ValueError("give either test data (test=, --test) or test_trials (--test-trials), not both")
    held = None if test_trials is None else (int(test_trials) if isinstance(test_trials, (int, np.integer))
                                             else [int(i) for i in test_trials])
    paths = all(isinstance(d, (str, os.PathLike)) for d in ([data] if test is None else [data, test]))
    if paths:
        spec = {"kind": "file", "source": os.fspath(data), "test_fraction": test_fraction, "standardize": "train"}
        if test is not None:
            spec["test_source"] = os.fspath(test)
        if dt is not None:
            spec["dt"] = dt
        if held is not None:
            spec["test_trials"] = held
        return spec, (None, None)
    spec = {"kind": "array", "test_fraction": test_fraction, "standardize": "train", "separate_test": test is not None}
    if held is not None:
        spec["test_trials"] = held
    return spec, (_as_raw(data, dt), None if test is None else _as_raw(test, dt))


def _as_raw(data, dt) -> Trajectory | TrialSet:
    """In-memory data as a Trajectory (trials: a TrialSet) whose values are the data units (an earlier
    standardization is forgotten: the values as given are what generate and forecast return)."""
    from dsrecon.data import load

    if isinstance(data, TrialSet):
        if dt is not None:
            data = data.map_trials(lambda t: replace(t, dt=dt, meta={**t.meta, "dt_known": True}),
                                   dt=dt, meta={**data.meta, "dt_known": True})
        unscaled = lambda meta: {k: v for k, v in meta.items() if k not in ("mean", "std", "standardized")}  # noqa: E731
        return data.map_trials(lambda t: replace(t, meta=unscaled(t.meta)), meta=unscaled(data.meta))
    traj = data if isinstance(data, Trajectory) else load(data, dt=dt)
    if isinstance(traj, TrialSet):
        return _as_raw(traj, None)
    if isinstance(data, Trajectory) and dt is not None:
        traj = replace(traj, dt=dt, meta={**traj.meta, "dt_known": True})
    meta = {k: v for k, v in traj.meta.items() if k not in ("mean", "std", "standardized", "delays")}
    return replace(traj, meta=meta)


def _load_data(spec: dict, source: tuple = (None, None)):
    """(train, test) Trajectories of a data spec: simulated, split from a file, or from arrays."""
    if spec["kind"] == "system":
        from dsrecon.systems import simulate_batch

        train, test = simulate_batch(spec["source"], 2, spec["n_steps"], seed=spec["seed"], noise=spec["noise"])
        return train, test
    from dsrecon.preparation import file_split, split_standardize, standardize_with_training

    if spec["kind"] == "file":
        return file_split(spec)
    raw, raw_test = source
    if raw_test is not None:
        return standardize_with_training(raw, raw_test)
    return split_standardize(raw, spec["test_fraction"], spec.get("test_trials"))


def _prepare(data_spec: dict, source, model: str, embed: str, latent_dim, observation, say):
    """Look at the data, decide embedding and latent size, print both; returns
    ``(train, test, unembedded train, summary dict, LatentChoice or None)``."""
    from dsrecon.inspection import inspect_data
    from dsrecon.preparation import apply_embedding, choose_embedding, choose_latent, parse_embed

    train, test = _load_data(data_spec, source)
    dt_known = train.meta.get("dt_known", True)
    one = continuous_series(train)  # time scales need one continuous series
    summary = inspect_data(one.x, train.dt if dt_known else None)
    if data_spec["kind"] == "system":
        part = "training trajectory"
    elif isinstance(train, TrialSet):
        held = (f"trials {data_spec['test_trials']} held out" if data_spec.get("test_trials") is not None else
                "test data given separately" if data_spec.get("test_source") is not None or data_spec.get("separate_test")
                else f"last {data_spec['test_fraction']:.0%} of every trial held out")
        part = (f"longest of {train.n_trials} training trials, {one.name!r} ({held}; standardized with the "
                "statistics pooled over the training trials)")
    elif data_spec.get("test_source") is not None or data_spec.get("separate_test"):
        part = "training data (the test data given separately)"
    else:
        part = f"training part, first {1 - data_spec['test_fraction']:.0%} of the {data_spec['kind']}"
    say(f"{summary}\n  (estimated on the {part})")
    out = {"data": summary.to_dict(), "estimated_on": part}
    raw_train = train
    if data_spec["kind"] != "system":
        emb = choose_embedding(train, parse_embed(embed))
        data_spec["delays"] = list(emb.delays)
        train, test = apply_embedding(train, emb.delays), apply_embedding(test, emb.delays)
        say(f"embedding: {emb.reason}; model sees N = {train.n_dims}")
        out["embedding"] = emb.to_dict()
    latent = None
    if model in ("shplrnn", "alrnn"):  # the models with a latent size M of their own
        latent = choose_latent(train, latent_dim, observation, defaults.LATENT_DIM)
        say(f"latent: M = {latent.latent_dim}, {latent.observation} observation ({latent.reason})")
        out["latent"] = latent.to_dict()
    if data_spec["kind"] != "system":
        out["standardization"] = {"mean": raw_train.meta["mean"], "std": raw_train.meta["std"],
                                  "from": "training part only"}
    return train, test, raw_train, out, latent


def _channels(traj: Trajectory, n: int) -> tuple:
    names = traj.meta.get("columns")
    return tuple(names) if isinstance(names, (list, tuple)) and len(names) == n else ()


def _transform(data_spec: dict, raw_train: Trajectory, train: Trajectory) -> DataTransform:
    """The fitted data's units: a system's are its simulated z-scored coordinates (nothing to map);
    a file's or array's are its own, standardized with the training part's mean and std."""
    dt_known = bool(train.meta.get("dt_known", True))
    if data_spec["kind"] == "system":
        return DataTransform.identity(train.n_dims, dt=train.dt, dt_known=dt_known)
    n = raw_train.n_dims
    return DataTransform(raw_train.meta["mean"], raw_train.meta["std"], tuple(data_spec.get("delays", [0])),
                         train.dt, dt_known, _channels(raw_train, n))


def _stored_transform(extra: dict, train: Trajectory) -> DataTransform:
    """The transform of a resumed run, from what it recorded (``extra.data_meta``)."""
    meta = extra.get("data_meta")
    dt_known = bool(train.meta.get("dt_known", True))
    if extra["data"]["kind"] == "system" or not meta:
        return DataTransform.identity(train.n_dims, dt=train.dt, dt_known=dt_known)
    delays = tuple(meta.get("delays", [0]))
    return DataTransform(meta["mean"], meta["std"], delays, train.dt, dt_known, tuple(meta.get("channels", ())))


def _run_meta(data_spec: dict, raw_train: Trajectory) -> dict:
    """What the run records about its data: the spec that reloads it and, for a file or array, the
    training part's mean/std (original channels), the delays and channel names, so that ``dsrecon
    evaluate RUN_DIR --data RAW_FILE`` maps a raw test file into the model's coordinates."""
    meta = {"data": data_spec}
    if data_spec["kind"] != "system" and "mean" in raw_train.meta:
        meta["data_meta"] = {"mean": raw_train.meta["mean"], "std": raw_train.meta["std"],
                             "delays": list(data_spec.get("delays", [0])),
                             "channels": list(_channels(raw_train, raw_train.n_dims))}
    return meta


def _read_summary(run: Path) -> dict:
    try:
        return json.loads((run / "data_summary.json").read_text())
    except (OSError, ValueError):
        return {}


# --------------------------------------------------------------------------- model and forcing
# ReLU units P of an ALRNN fitted by ``fit``: the authors' Lorenz-63 preset (Brenner et al., NeurIPS 2024)
ALRNN_RELU_UNITS = 2


def _model_kwargs(model: str, n: int, latent, hidden_dim, seed, latent_dim, clipped, observation) -> dict:
    if model == "alrnn":  # no hidden layer: M from the latent rule, ReLU on the last ALRNN_RELU_UNITS units
        if not clipped:
            raise ValueError("--unclipped applies to the shplrnn only, not 'alrnn'")
        return {"obs_dim": n, "latent_dim": latent.latent_dim, "n_relu": min(ALRNN_RELU_UNITS, latent.latent_dim),
                "observation": latent.observation, "seed": seed}
    kw = {"obs_dim": n, "hidden_dim": hidden_dim, "seed": seed}
    if model == "shplrnn":
        kw.update(latent_dim=latent.latent_dim, clipped=clipped, observation=latent.observation)
    elif latent_dim is not None or not clipped or observation is not None:
        raise ValueError(f"--latent-dim, --unclipped and --observation apply to the shplrnn only, not {model!r}")
    return kw


def _forcing(name: str, alpha, tau, train, say):
    from dsrecon.forcing import make_forcing

    kw = {}
    if alpha is not None:
        if name not in ("gtf", "agtf"):
            raise ValueError(f"--alpha applies to --forcing gtf or agtf, not {name}")
        kw = {"alpha": alpha} if name == "gtf" else {"alpha0": alpha}
    elif name == "gtf":
        kw = {"alpha": defaults.ALPHA}
    if tau is not None and name != "stf":
        raise ValueError(f"--tau applies to --forcing stf, not {name}")
    if name == "stf":
        kw = {"tau": tau if tau is not None else _tau_from_data(train, say)}
    return make_forcing(name, **kw)


def _tau_from_data(train, say) -> int:
    """STF interval from the data's largest Lyapunov exponent per step (Rosenstein on coordinate 0)."""
    from dsrecon.forcing import choose_tau
    from dsrecon.rosenstein import rosenstein_lambda_max

    lam = rosenstein_lambda_max(train.x[:10_000, 0])  # per step
    if not lam > 0:
        raise ValueError(f"the data's lambda_max estimate is {lam:.3g} per step, not positive; pass --tau")
    tau = choose_tau(lam, 1.0)
    say(f"STF: lambda_max of the data ~ {lam:.4f} per step -> tau = {tau} steps")
    return tau


# --------------------------------------------------------------------------- run folders
def _check_folder(path, option: str) -> Path:
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{option} {path} is an existing file, not a folder; give a folder path "
                         "(it is created if missing)")
    return path


def _check_new_run_folder(run_dir: Path) -> None:
    """``--out`` must be new, empty, or a run folder whose run never reached a checkpoint (started over)."""
    _check_folder(run_dir, "--out")
    if not run_dir.exists():
        return
    if (run_dir / "checkpoints" / "last.pt").exists():
        raise ValueError(f"--out {run_dir} already holds a run; continue it with `dsrecon fit --resume {run_dir}`, "
                         "or choose a new --out folder")
    if (run_dir / "config.json").is_file():
        print(f"{run_dir} holds a run that stopped before its first checkpoint: starting it over")
        return
    others = sorted(p.name for p in run_dir.iterdir() if p.name != LOCK_NAME)
    if others:
        shown = ", ".join(others[:5]) + (", ..." if len(others) > 5 else "")
        raise ValueError(f"--out {run_dir} exists and holds files that are not a dsrecon run ({shown}); fit would "
                         "write config.json, history.csv, metrics.json and plots there: choose a new or empty folder")


def _stored_config(run_dir: Path) -> dict:
    """The settings of the run to resume: its checkpoint's, or config.json's when it has no checkpoint yet."""
    if not run_dir.is_dir():
        raise FileNotFoundError(f"--resume {run_dir}: no such run folder")
    ckpt = run_dir / "checkpoints" / "last.pt"
    if ckpt.exists():
        state = read_checkpoint(ckpt)
        check_resumable(state, ckpt)
        stored = state["config"]
    elif (run_dir / "config.json").is_file():
        try:
            stored = json.loads((run_dir / "config.json").read_text())
        except ValueError as err:
            raise ValueError(f"--resume {run_dir}: config.json is not valid JSON ({err}); start a new run "
                             "with --out") from None
    else:
        raise FileNotFoundError(f"--resume {run_dir}: no run there (no checkpoints/last.pt, no config.json); "
                                f"start one with `dsrecon fit DATA --out {run_dir}`")
    if not all(isinstance(stored.get(k) if isinstance(stored, dict) else None, dict) for k in ("model", "forcing", "train")):
        raise ValueError(f"--resume {run_dir}: the stored run config lacks its model, forcing or training settings; "
                         "start a new run with --out")
    if not isinstance(stored.get("extra"), dict) or "data" not in stored["extra"]:
        raise ValueError(f"--resume {run_dir}: the run records no data source (it was not started by `dsrecon "
                         "fit`); continue it from Python with dsrecon.train(..., run_dir=..., resume=True)")
    return stored


# --------------------------------------------------------------------------- train, evaluate, keep
VALIDATION_FRACTION = 0.2  # share of the training part (its tail) a best_val selection validates on


def validation_series(train_data, test_data, cfg):
    """What training validates on: the test part when validations are only recorded
    (``select="last"``); the tail of the training part when they choose the kept parameters
    (``select="best_val"``), so no test point takes part in the choice."""
    if cfg.select != "best_val":
        return test_data
    series = continuous_series(train_data)
    return series.x[-max(int(len(series.x) * VALIDATION_FRACTION), 2):]  # (T_val, N), in-sample


def _train_and_finish(net, policy, cfg, train_data, test_data, transform, summary, settings_extra, run_meta,
                      run: Path | None, resume: bool, progress: bool, say, eval_config=None) -> Reconstruction:
    from dsrecon.checkpoint import model_spec
    from dsrecon.training import train

    shape = (f"{train_data.n_trials} trials, {train_data.x.shape}" if isinstance(train_data, TrialSet)
             else f"{train_data.x.shape}")
    say(f"dsrecon fit: {net.name} ({net.n_params} parameters) on {train_data.name} "
        f"{shape}, forcing {policy!r}, {cfg.epochs} epochs" + (f" -> {run}" if run else ""))
    lock = run_lock(run) if run is not None else _no_lock()
    with lock:  # one writer per run folder, from training to the last file
        result = train(net, train_data, cfg, policy, val_data=validation_series(train_data, test_data, cfg),
                       run_dir=run, resume=resume,
                       progress=progress, run_meta=run_meta)
        net.cpu()
        say(f"trained {result.epochs} epochs ({result.n_updates} updates) in {result.train_time_s:.0f} s; "
            f"final loss {result.final_loss:.4g}")
        if cfg.select == "best_val":
            say(f"kept the parameters of epoch {result.best_epoch}, the best validation on the last "
                f"{VALIDATION_FRACTION:.0%} of the training part" if result.best_epoch is not None else
                "no validation scored a finite D_stsp and D_H: kept the last parameters")
        t0 = time.perf_counter()
        data = summary.get("data") or {}
        metrics, lyapunov = _evaluate(net, test_data, run, eval_config,
                                      (data.get("lambda_max"), data.get("lambda_max_units")))
        plots = _plots(net, test_data, result.history, run, lyapunov) if run is not None else []
        reason = _diverged(metrics, result)
        settings = {"model": model_spec(net), "forcing": policy.config(), "train": asdict(cfg),
                    "data": run_meta["data"], **settings_extra}
        if cfg.select == "best_val":
            settings["selection"] = {"select": "best_val", "epoch": result.best_epoch,
                                     "validated_on": f"last {VALIDATION_FRACTION:.0%} of the training part"}
        reports = {"test": metrics, "data": summary.get("data"), "diverged": reason}
        idx = np.linspace(0, train_data.n_steps - 1, N_ANCHORS).round().astype(int)
        anchors = torch.as_tensor(np.asarray(train_data.x[idx]), dtype=net._dtype())  # (K, k N)
        rec = Reconstruction(net, transform, settings, [dict(r) for r in result.history], reports, anchors)
        if run is not None:
            rec.save(run / FILE_NAME)
    fmt = lambda v: f"{v:.3f}" if isinstance(v, (int, float)) and math.isfinite(v) else str(v)  # noqa: E731
    say(f"test ({test_data.n_steps} steps, {time.perf_counter() - t0:.0f} s): "
        f"D_stsp {fmt(metrics.get('d_stsp'))}, D_H {fmt(metrics.get('d_h'))}"
        + (f", PE(20) {fmt(metrics.get('pe'))}" if "pe" in metrics else "")
        + (f", lambda_max {fmt(metrics.get('lambda_max_model'))} {metrics.get('lyapunov_units')} (model)"
           if metrics.get("lambda_max_model") is not None else ""))
    for name, text in (metrics.get("flags") or {}).items():
        say(f"  flag {name}: {text}")
    if run is not None:
        say(f"files in {run}: config.json, history.csv, checkpoints/last.pt, metrics.json, {FILE_NAME}"
            + (", " + ", ".join(plots) if plots else ""))
    if reason is not None:
        warnings.warn(f"the trained model diverged: {reason}", RuntimeWarning, stacklevel=3)
    return rec


def _fit_budget(net, train_data, cfg, policy, budget, say):
    """The epochs of ``cfg`` capped to the training-time ``budget`` (measured per epoch first)."""
    from dataclasses import replace

    from dsrecon.budget import parse_duration, plan_epochs

    budget_s = parse_duration(budget)
    try:
        plan = plan_epochs(net, train_data, cfg, policy, budget_s)
    except (ValueError, RuntimeError) as err:  # the run itself then fails with its own, fuller message
        say(f"time: not measured ({type(err).__name__}: {err})")
        return cfg, {"budget_s": budget_s, "note": f"time per epoch not measured: {err}"}
    say(f"time: {plan.message}")
    if plan.capped:
        warnings.warn(plan.message, RuntimeWarning, stacklevel=4)
        cfg = replace(cfg, epochs=plan.epochs)
    return cfg, {"budget_s": plan.budget_s, "epoch_s": plan.epoch_s, "requested_epochs": plan.requested,
                 "epochs": plan.epochs}


class _no_lock:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _evaluate(model, test, run_dir: Path | None, config=None, data_lambda=(None, None)):
    """Final metrics on the test trajectory: dsrecon.evaluate, or D_stsp / D_H where it cannot run;
    returns them with the Lyapunov result (None when not computed) for the plot. ``flags``
    (:meth:`dsrecon.evaluation.Report.flags`) name the ways the reconstruction is unlike the data,
    judged against ``data_lambda = (lambda_max, units)`` of the data when its units are the report's."""
    try:
        from dsrecon.evaluation import evaluate

        report = evaluate(model, test, config)
    except (ImportError, ValueError) as err:  # missing module, or a model whose output it rejects
        out = {"note": f"dsrecon.evaluate failed ({type(err).__name__}: {err}); D_stsp and D_H only"}
        out.update(_basic_metrics(model, test))
        if run_dir is not None:
            write_json(run_dir / "metrics.json", out)
        return out, None
    lam, units = data_lambda
    flags = report.flags(lam if units == report.lyapunov_units else None)
    if run_dir is not None:
        saved = json.loads(report.save(run_dir / "metrics.json").read_text())  # NaN written as null
        write_json(run_dir / "metrics.json", {**saved, "flags": flags})
    return {**report.to_dict(), "flags": flags}, report.lyapunov


def _basic_metrics(model, test) -> dict:
    """D_stsp and D_H by the paper's protocol; NaN for a metric undefined on the generated series."""
    from dsrecon.metrics import hellinger_distance, state_space_divergence
    from dsrecon.rollout import generate

    test = continuous_series(test)
    n = test.n_steps
    x_gen = generate(model, test.x[0], n + n // 4)[n // 4:].numpy()
    out = {}
    for key, metric in (("d_stsp", state_space_divergence), ("d_h", hellinger_distance)):
        try:
            out[key] = float(metric(test.x, x_gen))
        except ValueError:  # e.g. D_H of a model that collapsed to a fixed point
            out[key] = float("nan")
    return out


def _plots(model, test, history, run_dir: Path, lyapunov=None) -> list[str]:
    try:
        plotting = import_module("dsrecon.plotting")
        import matplotlib  # noqa: F401
    except ImportError as err:
        return [f"plots skipped ({err})"]
    from dsrecon.rollout import generate

    test = continuous_series(test)  # plots of one continuous test series
    n = min(test.n_steps, 20_000)
    x_gen = generate(model, test.x[0], n + n // 4)[n // 4:].numpy()
    made = []
    jobs = [("plot_training_curves", "training.png", (history,)),
            ("plot_attractor", "attractor.png", (test.x[:n], x_gen)),
            ("plot_spectra", "spectra.png", (test.x[:n], x_gen))]
    if lyapunov is not None:  # labelled per time unit or per step by its own dt
        jobs.append(("plot_lyapunov_convergence", "lyapunov.png", (lyapunov,)))
    for func, name, args in jobs:
        try:
            getattr(plotting, func)(*args, run_dir / name)
            made.append(name)
        except Exception as err:  # a plot must never lose a finished run's results
            made.append(f"{name} failed ({type(err).__name__}: {err})")
    return made


def _diverged(metrics: dict, result) -> str | None:
    """Why a finished run counts as diverged (None if it does not): non-finite loss, or a generated series
    on which neither D_stsp nor D_H is defined."""
    if not math.isfinite(result.final_loss):
        return f"its final training loss is {result.final_loss}"
    values = [metrics.get(k) for k in ("d_stsp", "d_h")]
    if all(not isinstance(v, (int, float)) or not math.isfinite(v) for v in values):
        return "its generated series is not finite (D_stsp and D_H are NaN)"
    return None
