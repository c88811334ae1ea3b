"""Scripted comparisons: ``compare(grid)`` trains and evaluates every (model, forcing, dataset,
seed) of a grid under one shared budget and aggregates the results over seeds.

Parts: ``grid`` (TOML layout, checks, run identities), ``runner`` (one run, in any process),
``executors`` (serial, worker processes, Ray), ``table`` (aggregation, CSV/Markdown, figure).
"""

from __future__ import annotations

import warnings
from pathlib import Path

from dsrecon.comparison.executors import EXECUTORS, check_executor, run_tasks
from dsrecon.comparison.grid import Grid, RunSpec, load_grid
from dsrecon.checkpoint import run_lock
from dsrecon.comparison.runner import dataset_lambda_max, execute_run, is_finished, prepare_dataset, record_failure
from dsrecon.comparison.table import METRICS, CompareResult, aggregate, plot_comparison, run_record


def compare(grid, *, out_dir=None, executor: str = "process", workers: int | None = None,
            progress: bool = True, figure: bool = True, retry_failed: bool = True,
            ensembles: bool = True) -> CompareResult:
    """Run a comparison grid and return its results table.

    Parameters
    ----------
    grid : str, Path or dict
        A TOML grid file or its parsed table (layout: ``dsrecon.comparison.grid``). Every model,
        forcing, budget field and data file is checked before anything runs.
    out_dir : str or Path, optional
        Output folder (default: the grid's ``out_dir`` key, else ``./compare_<grid name>``).
        Holds ``data/`` (prepared datasets), ``runs/<slug>-<hash>/`` (one folder per run),
        ``results.csv``, ``results.md``, ``runs.csv`` and ``figure.png``.
    executor : {"process", "serial", "ray"}
        ``"process"``: a pool of spawned worker processes, one torch thread each (default);
        ``"serial"``: in this process; ``"ray"``: one Ray task per run (``pip install dsrecon[ray]``).
    workers : int, optional
        Parallel runs (default: the cores available; 1 for serial).
    progress : bool
        tqdm bar with runs done, running and failed.
    figure : bool
        Write attractor and spectrum panels (needs matplotlib; skipped without it).
    retry_failed : bool
        Run again the runs whose folder holds an ``error.json`` (default). Runs with a
        ``result.json`` are never run again, so an interrupted grid continues where it stopped
        (a run stopped mid-training resumes from its last checkpoint).
    ensembles : bool
        Train the unfinished shPLRNN runs that differ only in their seed together, as one
        ensemble (:func:`dsrecon.train` of a :class:`dsrecon.ensemble.Ensemble`, equal to separate runs; checkpointed under
        ``out_dir/ensembles/``), one task for one worker. Default True; False runs every seed as
        its own task (more parallelism when workers outnumber the groups).

    Returns
    -------
    CompareResult
        ``rows`` aggregated per (model, forcing, dataset): mean, standard error and median over
        seeds of D_stsp, D_H, PE(20), |lambda_max error| and training time, plus the parameter
        count; ``runs`` one record per run; ``to_csv()``, ``to_markdown()``.

    Notes
    -----
    A failing run (divergence, a bad model argument, any exception) writes ``error.json`` with its
    traceback and the others go on; the failures are listed in ``results.md`` and warned about. A
    dataset that cannot be prepared (corrupt file, too short) fails only its own runs (stage
    ``data``). A second ``compare`` into an ``out_dir`` in use is refused (lock file
    ``out_dir/.dsrecon.lock``; the lock of a process that died is taken over). The process executor
    starts workers with "spawn", which re-imports the calling script: in a script, call
    ``compare`` under ``if __name__ == "__main__":``.
    """
    g = load_grid(grid)
    executor, workers = check_executor(executor, workers)
    out_dir = Path(out_dir) if out_dir is not None else (g.out_dir or Path.cwd() / f"compare_{g.name}")
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"output folder {out_dir} is an existing file; give a folder path (CLI: --out DIR)")
    out_dir.mkdir(parents=True, exist_ok=True)
    with run_lock(out_dir, "comparison folder"):  # one compare per folder; a dead one's lock is taken over
        return _compare(g, out_dir, executor, workers, progress, figure, retry_failed, ensembles)


def _compare(g: Grid, out_dir: Path, executor: str, workers: int, progress: bool, figure: bool,
             retry_failed: bool, ensembles: bool) -> CompareResult:
    data_dirs, data_errors = _prepare_datasets(g, out_dir)
    _warn_units(g, data_dirs)
    specs = g.runs()
    run_dirs = [_run_dir(out_dir / "runs", s) for s in specs]
    for spec, d in zip(specs, run_dirs):  # a bad dataset fails its own runs, and only those
        label = spec.dataset["label"]
        if label in data_errors and not is_finished(d):
            record_failure(spec.to_dict(), d, "data", data_errors[label])
    todo = [i for i, d in enumerate(run_dirs)
            if specs[i].dataset["label"] in data_dirs and not is_finished(d)
            and (retry_failed or not (d / "error.json").is_file())]
    tasks = [([specs[i].to_dict() for i in group], [str(run_dirs[i]) for i in group],
              str(data_dirs[specs[group[0]].dataset["label"]])) for group in _groups(specs, todo, ensembles)]

    n_data_failed = sum(s.dataset["label"] in data_errors and not is_finished(d) for s, d in zip(specs, run_dirs))
    bar = _progress(len(specs), len(specs) - len(todo), executor, progress)
    counts = {"done": len(specs) - len(todo) - n_data_failed, "failed": n_data_failed, "running": 0}

    def on_start(n_running):
        counts["running"] = n_running
        _postfix(bar, counts)

    def on_done(_, summary):
        counts["done" if summary["status"] == "done" else "failed"] += 1
        counts["running"] = max(0, counts["running"] - 1)
        if bar is not None:
            bar.update(1)
        _postfix(bar, counts)

    try:
        run_tasks(tasks, executor=executor, workers=workers, on_done=on_done, on_start=on_start)
    finally:
        if bar is not None:
            bar.close()
    refs = {d["label"]: dataset_lambda_max(d, data_dirs[d["label"]], g.eval) if d["label"] in data_dirs
            else float("nan") for d in g.datasets}
    records = [run_record(s, d, refs[s.dataset["label"]]) for s, d in zip(specs, run_dirs)]
    result = CompareResult(rows=aggregate(records), runs=records, out_dir=out_dir, n_executed=len(todo),
                           n_skipped=len(specs) - len(todo), title=g.name)
    result.save(out_dir)
    if figure:
        try:
            plot_comparison(result, data_dirs, out_dir / "figure.png")
        except Exception as err:  # the table is saved already; a figure must not cost the results
            warnings.warn(f"the comparison figure could not be drawn ({type(err).__name__}: {err}); the "
                          f"results are in {out_dir}", RuntimeWarning, stacklevel=3)
    if result.n_failed:
        warnings.warn(f"{result.n_failed} of {len(specs)} runs failed; see results.md and the runs' "
                      f"error.json in {out_dir / 'runs'}", RuntimeWarning, stacklevel=3)
    return result



def _groups(specs: list, todo: list, ensembles: bool) -> list[list[int]]:
    """Task groups of run indices: shPLRNN runs equal but for the seed together (if ``ensembles``),
    every other run alone. Order follows ``todo``."""
    import json

    groups, by_key = [], {}
    for i in todo:
        d = specs[i].to_dict()
        if not ensembles or d["model"]["name"] != "shplrnn":
            groups.append([i])
            continue
        key = json.dumps({k: v for k, v in d.items() if k != "seed"}, sort_keys=True, default=str)
        if key not in by_key:
            by_key[key] = []
            groups.append(by_key[key])
        by_key[key].append(i)
    return groups


def _run_dir(root: Path, spec: RunSpec) -> Path:
    """The run's folder: an existing one with the same hash (labels may have changed), else new."""
    existing = sorted(root.glob(f"*-{spec.key}")) if root.is_dir() else []
    return existing[0] if existing else root / spec.folder_name


def _prepare_datasets(g: Grid, out_dir: Path) -> tuple[dict, dict]:
    """Prepare every dataset: ``(label -> data folder, label -> error)``.

    A dataset that cannot be read, split or standardized, or is too short for the budget's
    ``seq_len``, is warned about and reported in the second dict; the grid goes on with the others.
    """
    data_dirs, errors = {}, {}
    for d in g.datasets:
        try:
            folder = prepare_dataset(d, out_dir / "data")
            _check_length(g, d["label"], folder)
        except (ValueError, OSError, RuntimeError, ImportError) as err:
            errors[d["label"]] = err
            warnings.warn(f"dataset {d['label']!r} cannot be used ({type(err).__name__}: {err}); its runs are "
                          "recorded as failed and the others go on", RuntimeWarning, stacklevel=4)
        else:
            data_dirs[d["label"]] = folder
    return data_dirs, errors


def _check_length(g: Grid, label: str, folder: Path) -> None:
    import json

    need = int(g.budget.get("seq_len", 200)) + 1
    meta = json.loads((Path(folder) / "meta.json").read_text())
    trials = meta.get("train_trials")
    n = max(trials["lengths"]) if trials else meta["n_train"]  # windows lie inside one trial
    if n < need:
        where = f"its longest training trial has {n} steps" if trials else f"it has {n} training steps"
        raise ValueError(f"dataset {label!r}: {where} but [budget] seq_len needs at least "
                         f"{need}; use a longer series or a shorter seq_len")


def _warn_units(g: Grid, data_dirs: dict) -> None:
    """A reference lambda_max is per time unit; with no dt (npy/csv files) the model's is per step."""
    import json

    for d in g.datasets:
        if d["label"] not in data_dirs:
            continue
        meta = json.loads((Path(data_dirs[d["label"]]) / "meta.json").read_text())
        if "lambda_max" in d and "dt" not in d and meta["dt"] == 1.0:
            warnings.warn(f"dataset {d['label']!r} gives lambda_max = {d['lambda_max']} (per time unit) but no dt, "
                          "and its files carry none, so dt = 1: model exponents come out per step and the "
                          "lambda_max error mixes units; add dt = <sampling interval> to the dataset",
                          RuntimeWarning, stacklevel=4)


def _progress(total, initial, executor, enabled):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=f"compare ({executor})", unit="run", dynamic_ncols=True)


def _postfix(bar, counts) -> None:
    if bar is not None:
        bar.set_postfix(done=counts["done"], running=counts["running"], failed=counts["failed"])


__all__ = ["compare", "CompareResult", "Grid", "RunSpec", "load_grid", "EXECUTORS", "METRICS",
           "execute_run"]
