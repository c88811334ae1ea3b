"""One run of a comparison grid, and the data it reads.

The parent process prepares each dataset once (load, split, truncate, standardize) into
``<out_dir>/data/<label>-<hash>/{train,test}.npy``; each run, in whatever worker executes it,
reads those arrays, builds its model and forcing, trains, evaluates and writes into its folder::

    spec.json      the run's configuration (RunSpec.to_dict())
    train/         the trainer's folder: config.json, history.csv, checkpoints/last.pt
                   (a run trained in an ensemble: history.csv and model.pt)
    report.json    dsrecon.evaluate's Report
    generated.npy  a free-running sample (float32, up to 5,000 steps after a 25% transient)
    result.json    written last, atomically: the run is finished iff this file exists
    error.json     instead of result.json when a stage failed: stage, error, traceback

A run interrupted during training resumes from its last checkpoint the next time. ShPLRNN runs
that differ only in their seed train together as one ensemble (:func:`execute_group`), whose
checkpoint is ``<out_dir>/ensembles/<hash>/ensemble.pt``.
"""

from __future__ import annotations

import json
import math
import platform
import shutil
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from dsrecon.comparison.grid import slug, without_label

RESULT, ERROR, SPEC, REPORT, SAMPLE = "result.json", "error.json", "spec.json", "report.json", "generated.npy"
SAMPLE_STEPS = 5_000


def _write_json(path: Path, obj) -> None:
    from dsrecon.checkpoint import write_json

    write_json(path, obj)


def _key(entry: dict) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(without_label(entry), sort_keys=True).encode()).hexdigest()[:12]


def prepare_dataset(entry: dict, data_root: Path) -> Path:
    """Load, split, truncate and (optionally) standardize one dataset entry, once.

    Returns the folder holding ``train.npy``, ``test.npy`` (float64, ``(T, N)``) and ``meta.json``
    (dt, sizes, source, standardization). Standardization uses the training part's mean and std for
    both parts, so the test data are in the coordinates the model was trained in.

    A part made of trials (a :class:`~dsrecon.trials.TrialSet`: a folder, a list, an npz or h5
    group of several series) is stored end to end in its ``.npy`` with the trial lengths in
    ``meta["train_trials"]`` / ``meta["test_trials"]`` (``{"lengths": [...], "names": [...]}``), from
    which :func:`load_part` rebuilds it: training windows then stay inside trials, the mean and std
    are pooled over the training trials, and evaluation scores each test trial and the pool. Its
    test part is held-out tails of every trial (``test_fraction``), whole held-out trials
    (``test_trials``: a count of last trials or their indices), or a ``test`` source.
    """
    from dsrecon.data import train_test_split
    from dsrecon.trials import TrialSet, split_trials

    folder = Path(data_root) / f"{slug(entry['label'])}-{_key(entry)}"
    if (folder / "meta.json").is_file():
        return folder
    train = _load(entry["train"], entry.get("simulate"), entry.get("dt"))
    if "test_trials" in entry:  # split_trials refuses one series
        train, test = split_trials(train, test_trials=entry["test_trials"])
    elif "test" in entry:
        test = _load(entry["test"], entry.get("simulate_test"), entry.get("dt", train.dt))
    else:
        train, test = train_test_split(train, entry["test_fraction"])
    meta = {"label": entry["label"], "dt": float(entry.get("dt", train.dt))}
    parts = {}
    for name, data in (("train", train), ("test", test)):
        limit = entry.get(f"max_{name}_steps")
        if isinstance(data, TrialSet):
            if limit is not None:
                raise ValueError(f"dataset {entry['label']!r}: max_{name}_steps keeps the first steps of one series, "
                                 f"but the {name} part holds {data.n_trials} trials; choose the trials instead (a "
                                 "folder or archive of fewer series, test_trials)")
            meta[f"{name}_trials"] = {"lengths": data.lengths, "names": [t.name for t in data.trials]}
        parts[name] = data.x[:limit]
    x_train, x_test = parts["train"], parts["test"]
    if x_train.shape[1] != x_test.shape[1]:
        raise ValueError(f"dataset {entry['label']!r}: train has N = {x_train.shape[1]} columns but test "
                         f"has N = {x_test.shape[1]}; they must observe the same variables")
    meta.update(n_train=len(x_train), n_test=len(x_test), n_dims=int(x_train.shape[1]), entry=entry)
    if entry.get("standardize"):
        mean, std = x_train.mean(axis=0, dtype=np.float64), x_train.std(axis=0, dtype=np.float64)  # (N,), pooled
        if np.any(std == 0):
            raise ValueError(f"dataset {entry['label']!r}: a training column is constant; cannot standardize")
        x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
        meta.update(mean=mean.tolist(), std=std.tolist())
    folder.mkdir(parents=True, exist_ok=True)
    for name, x in (("train", x_train), ("test", x_test)):
        tmp = folder / f".tmp-{name}.npy"
        np.save(tmp, np.ascontiguousarray(x, dtype=np.float64))
        tmp.replace(folder / f"{name}.npy")
    _write_json(folder / "meta.json", meta)
    return folder


def load_part(data_dir: Path, part: str, meta: dict | None = None):
    """A prepared dataset's ``part`` ("train" or "test"): a Trajectory ``(T, N)``, or the TrialSet it
    was made of (its trials cut back out of the stored array by their lengths)."""
    from dsrecon.trajectory import Trajectory
    from dsrecon.trials import TrialSet

    data_dir = Path(data_dir)
    meta = json.loads((data_dir / "meta.json").read_text()) if meta is None else meta
    x = np.load(data_dir / f"{part}.npy")  # (T, N); trials end to end
    trials = meta.get(f"{part}_trials")
    if trials is None:
        return Trajectory(x, dt=meta["dt"], name=meta["label"])
    ends = np.cumsum(trials["lengths"])
    pieces = np.split(x, ends[:-1])
    return TrialSet(tuple(Trajectory(piece, dt=meta["dt"], name=name) for piece, name in zip(pieces, trials["names"])),
                    dt=meta["dt"], name=meta["label"])


def _load(source: str, simulate_kwargs: dict | None, dt):
    from dsrecon.data import load

    if simulate_kwargs is not None:
        from dsrecon.systems import simulate

        kwargs = dict(simulate_kwargs, **({"dt": dt} if dt is not None else {}))
        return simulate(source, **{"progress": False, **kwargs})
    return load(source, dt=dt)


def is_finished(run_dir: Path) -> bool:
    return (Path(run_dir) / RESULT).is_file()


def execute_task(task: tuple, threads: int | None = 1) -> list[dict]:
    """Execute one task of a grid: ``(specs, run_dirs, data_dir)``, one run or a seed group.

    A single spec runs through :func:`execute_run`; several (shPLRNN runs differing only in their
    seed) train together as one ensemble (:func:`execute_group`). Returns one summary per run.
    """
    specs, run_dirs, data_dir = task
    if len(specs) == 1:
        return [execute_run(specs[0], run_dirs[0], data_dir, threads=threads)]
    return execute_group(specs, run_dirs, data_dir, threads=threads)


def execute_run(spec: dict, run_dir: str, data_dir: str, threads: int | None = 1) -> dict:
    """Train and evaluate one run; never raises (failures go to ``error.json``).

    Parameters
    ----------
    spec : dict
        ``RunSpec.to_dict()``.
    run_dir, data_dir : str
        The run's folder and its prepared dataset folder.
    threads : int or None
        ``torch.set_num_threads`` for this process (1 in parallel workers, so K workers use K
        cores); None leaves it unchanged.

    Returns
    -------
    dict with ``status`` ("done" or "failed"), ``run_dir`` and, on failure, ``error``.
    """
    run_dir = Path(run_dir)
    _set_threads(threads)
    stage, t0 = "setup", time.perf_counter()
    try:
        meta, train_data, test_data, model, forcing = _setup(spec, run_dir, Path(data_dir))
        stage = "train"
        result = _train(model, forcing, spec, train_data, run_dir / "train")
        return _finish(spec, run_dir, model, result, float(result.train_time_s), test_data)
    except Exception as err:  # a failed run is recorded; the grid goes on
        return _fail(spec, run_dir, getattr(err, "stage", stage), err, t0)


def execute_group(specs: list, run_dirs: list, data_dir: str, threads: int | None = 1) -> list[dict]:
    """Train K shPLRNN runs that differ only in their seed as one ensemble, then evaluate each.

    :func:`dsrecon.train` of a :class:`dsrecon.ensemble.Ensemble` reproduces K separate runs (same windows, same updates;
    tests), in one batched computation. Its checkpoint lives in ``<out_dir>/ensembles/<hash of the
    runs>/``, so a group stopped mid-training continues from there. Each run's folder gets what
    :func:`execute_run` writes (``train/history.csv`` and ``train/model.pt`` instead of the
    trainer's checkpoints); ``train_time_s`` is the ensemble's wall time divided by K and
    ``ensemble_size`` says K. A model that diverged fails alone; an error in training fails all K.
    """
    from dsrecon.fast._kernels import set_kernel_threads
    from dsrecon.ensemble import Ensemble

    run_dirs = [Path(d) for d in run_dirs]
    _set_threads(threads)
    set_kernel_threads(threads)  # K models over kernel threads only when this worker owns the cores
    t0 = time.perf_counter()
    setups, summaries = [], [None] * len(specs)
    for i, (spec, run_dir) in enumerate(zip(specs, run_dirs)):
        try:
            setups.append((i, _setup(spec, run_dir, Path(data_dir))))
        except Exception as err:
            summaries[i] = _fail(spec, run_dir, getattr(err, "stage", "setup"), err, t0)
    if setups:
        idx = [i for i, _ in setups]
        meta, train_data, test_data, _, forcing = setups[0][1]
        models = [s[3] for _, s in setups]
        group_dir = Path(data_dir).parent.parent / "ensembles" / _key({"runs": sorted(run_dirs[i].name for i in idx)})
        try:
            from dsrecon.history import write_history_csv
            from dsrecon.training import TrainConfig, train

            config = TrainConfig(**specs[idx[0]]["budget"], seed=specs[idx[0]]["seed"])
            results = train(Ensemble(models, seeds=[specs[i]["seed"] for i in idx]),
                            train_data, config, forcing, run_dir=group_dir,
                            resume=(group_dir / "ensemble.pt").is_file(), progress=False).members
            per_run = results[0].train_time_s / len(idx)  # the ensemble's wall time, shared
        except Exception as err:
            for i in idx:
                summaries[i] = _fail(specs[i], run_dirs[i], "train", err, t0)
            return summaries
        for i, model, result in zip(idx, models, results):
            spec, run_dir = specs[i], run_dirs[i]
            try:
                (run_dir / "train").mkdir(parents=True, exist_ok=True)
                write_history_csv(run_dir / "train" / "history.csv", result.history)
                shutil.copyfile(group_dir / f"seed{spec['seed']}.pt", run_dir / "train" / "model.pt")
                _check_finite(model)
                summaries[i] = _finish(spec, run_dir, model, result, per_run, test_data,
                                       extra={"ensemble_size": len(idx), "ensemble_dir": str(group_dir)})
            except Exception as err:
                summaries[i] = _fail(spec, run_dir, getattr(err, "stage", "train"), err, t0)
    return summaries


def _check_finite(model) -> None:
    """Raise if training left non-finite parameters (the run then fails at its train stage)."""
    import torch

    if not all(bool(torch.all(torch.isfinite(p))) for p in model.parameters()):
        raise RuntimeError("training diverged: the model has non-finite parameters")


def _set_threads(threads: int | None) -> None:
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def _setup(spec: dict, run_dir: Path, data_dir: Path):
    """Folder, spec.json, data, model and forcing of a run: ``(meta, train, test, model, forcing)``,
    ``train``/``test`` as :func:`load_part` gives them.

    An error carries the stage it happened in as ``err.stage`` (data, model, forcing).
    """
    stage = "setup"
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / ERROR).unlink(missing_ok=True)
        _write_json(run_dir / SPEC, spec)
        stage = "data"
        meta = json.loads((data_dir / "meta.json").read_text())
        train_data, test_data = load_part(data_dir, "train", meta), load_part(data_dir, "test", meta)
        stage = "model"
        from dsrecon.models import make_model

        model = make_model(spec["model"]["name"], obs_dim=meta["n_dims"], seed=spec["seed"],
                           **spec["model"]["params"])
        stage = "forcing"
        from dsrecon.forcing import make_forcing

        forcing = make_forcing(spec["forcing"]["name"], **spec["forcing"]["params"])
    except Exception as err:
        err.stage = stage
        raise
    return meta, train_data, test_data, model, forcing


def _finish(spec: dict, run_dir: Path, model, result, train_time_s: float, test_data, extra: dict | None = None
            ) -> dict:
    """Evaluate a trained run and write report.json, the sample and, last, result.json."""
    stage = "evaluate"
    try:
        t_eval = time.perf_counter()
        from dsrecon.evaluation import EvalConfig, evaluate

        report = evaluate(model, test_data, EvalConfig(**spec["eval"]))
        report.save(run_dir / REPORT)
        eval_time = time.perf_counter() - t_eval
        stage = "sample"
        np.save(run_dir / SAMPLE, _sample(report))
        stage = "result"
        out = {"status": "done", "spec": spec, "key": run_dir.name.rsplit("-", 1)[-1],
               "metrics": report_metrics(report), "collapsed": report.collapsed, "n_params": int(model.n_params),
               "train_time_s": float(train_time_s), "eval_time_s": eval_time,
               "epochs": int(result.epochs), "n_updates": int(result.n_updates),
               "recoveries": int(result.recoveries),
               "final_loss": float(result.history[-1]["loss"]) if result.history else float("nan"),
               **(extra or {}),
               "host": platform.node(), "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        from dsrecon.checkpoint import finite_or_none  # JSON has no NaN/inf: None, read back as NaN by the table

        _write_json(run_dir / RESULT, finite_or_none(out))
    except Exception as err:
        err.stage = stage
        raise
    return {"status": "done", "run_dir": str(run_dir)}


def record_failure(spec: dict, run_dir, stage: str, err: Exception) -> dict:
    """Record a run that failed before it started (e.g. its dataset could not be prepared) in its
    error.json, as a failed run records itself; returns the summary an executor reports."""
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    return _fail(spec, Path(run_dir), stage, err, time.perf_counter())


def _fail(spec: dict, run_dir: Path, stage: str, err: Exception, t0: float) -> dict:
    """Record a failed run in its error.json; the summary the executors report."""
    error = {"status": "failed", "stage": stage, "error_type": type(err).__name__, "error": str(err),
             "traceback": "".join(traceback.format_exception(err)), "spec": spec,
             "elapsed_s": time.perf_counter() - t0,
             "failed_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    try:
        _write_json(Path(run_dir) / ERROR, error)
    except OSError:
        pass
    return {"status": "failed", "run_dir": str(run_dir), "error": f"{stage}: {type(err).__name__}: {err}"}


def _train(model, forcing, spec: dict, train_data, train_dir: Path):
    """Train with the shared budget; continue from a checkpoint left by an interrupted run."""
    from dsrecon.training import TrainConfig, train

    config = TrainConfig(**spec["budget"], seed=spec["seed"])
    # started but never checkpointed: train() starts over in place (unless a live writer holds the lock)
    resume = (train_dir / "checkpoints" / "last.pt").is_file()
    result = train(model, train_data, config, forcing, run_dir=train_dir, resume=resume,
                   progress=False)
    _check_finite(model)
    return result


def _sample(report) -> np.ndarray:
    """The first <= 5,000 steps of the free run ``evaluate`` compared (after its warm-up; for test
    trials, the longest trial's)."""
    return np.asarray(report.generated[:SAMPLE_STEPS], dtype=np.float32)  # (n, N)


def report_metrics(report) -> dict:
    """The numbers the results table aggregates, from a ``dsrecon.evaluation.Report``.

    ``lambda_max_data`` is None unless the evaluation estimated it (``EvalConfig.lambda_max_data``);
    the table then uses the dataset's reference value (``dataset_lambda_max``).
    """
    return {"d_stsp": report.d_stsp, "d_h": report.d_h, "pe": report.pe,
            "lambda_max_model": report.lambda_max_model, "lambda_max_data": report.lambda_max_data}


def dataset_lambda_max(entry: dict, data_dir: Path, eval_fields: dict) -> float:
    """Reference lambda_max of a dataset's test series (per time unit), computed once per grid.

    The dataset's ``lambda_max`` key if given (e.g. a literature value); else Rosenstein's
    estimate on the test series with the evaluation's Rosenstein settings (the same call
    ``evaluate`` makes with ``lambda_max_data=True``), cached in the data folder. NaN if the
    evaluation computes no model exponent (``lyapunov = false``) or the estimate fails.
    """
    import hashlib
    import warnings

    from dsrecon.evaluation import EvalConfig

    if "lambda_max" in entry:
        return float(entry["lambda_max"])
    cfg = EvalConfig(**eval_fields)
    if not cfg.lyapunov:
        return float("nan")
    settings = {k: getattr(cfg, k) for k in ("rosenstein_points", "rosenstein_emb_dim",
                                             "rosenstein_trajectory_len", "rosenstein_fit_offset")}
    cache = Path(data_dir) / f"lambda_max-{hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]}.json"
    if cache.is_file():
        value = json.loads(cache.read_text())["lambda_max"]
        return float("nan") if value is None else float(value)
    import torch

    from dsrecon.rosenstein import rosenstein_lambda_max

    meta = json.loads((Path(data_dir) / "meta.json").read_text())
    from dsrecon.trials import continuous_series

    x = torch.as_tensor(continuous_series(load_part(data_dir, "test", meta)).x[: cfg.rosenstein_points])  # (T, N)
    try:
        value = float(rosenstein_lambda_max(x, emb_dim=cfg.rosenstein_emb_dim,
                                            trajectory_len=cfg.rosenstein_trajectory_len,
                                            fit_offset=cfg.rosenstein_fit_offset, tau=meta["dt"]))
    except (ValueError, RuntimeError) as err:
        warnings.warn(f"dataset {entry['label']!r}: Rosenstein lambda_max failed ({err}); the lambda_max "
                      "error is left empty (give the dataset a lambda_max = ... reference)", RuntimeWarning,
                      stacklevel=3)
        value = float("nan")
    _write_json(cache, {"lambda_max": value if math.isfinite(value) else None, "settings": settings,
                        "method": "rosenstein", "units": "per time unit (tau = dt)"})
    return value


__all__ = ["execute_task", "execute_run", "execute_group", "prepare_dataset", "load_part",
           "is_finished", "report_metrics", "dataset_lambda_max", "record_failure"]
