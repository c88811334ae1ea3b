"""Comparison grids: read a TOML grid, check it, expand it into runs with stable folder names.

A grid is the cross product models x forcings x datasets x seeds under one shared training budget
and one evaluation setting, so that a comparison changes one thing at a time::

    seeds = [0, 1, 2]                 # or a count: seeds = 3  (-> 0, 1, 2)

    [budget]                          # TrainConfig fields, the same for every run; epochs required
    epochs = 100
    batches_per_epoch = 50

    [eval]                            # EvalConfig fields (optional)

    [[models]]                        # registry name + constructor arguments (obs_dim and seed are
    name = "lem"                      # filled in from the data and the run's seed)
    hidden_dim = 32
    label = "LEM"                     # optional name in the tables

    [[forcings]]                      # make_forcing name + arguments
    name = "gtf"
    alpha = 0.1

    [[datasets]]
    train = "lorenz63"                # anything dsrecon.load reads: a registered name, a file, or
                                      # trials (a folder of files, an npz/h5 "file:*" of several series)
    test = "path/to/test.npy"         # optional; else the last test_fraction (0.2) of train
                                      # (of every trial), or test_trials = k: the last k trials
    max_train_steps = 20000           # optional: keep only the first n steps
    standardize = false               # z-score train and test with the training statistics
    lambda_max = 0.9056               # optional reference for the lambda_max error (per time unit);
                                      # default: Rosenstein's estimate on the test series, once

    [[datasets]]                      # a benchmark system simulated with dsrecon.simulate:
    train = "lorenz63"                # `simulate` holds its keyword arguments, and test = the same
    test = "lorenz63"                 # system gets them too with seed + 1 (an independent initial
    simulate = {n_steps = 20000, seed = 0, noise = 0.05}   # condition) unless simulate_test is given

Relative file paths are resolved against the grid file's folder. A run's identity is a hash of
everything that changes its result (model, forcing, dataset, seed, budget, evaluation settings;
not the display labels), so a finished run is found again after a restart and a changed budget
starts new runs instead of reusing stale ones.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

GRID_KEYS = ("name", "out_dir", "seeds", "budget", "eval", "models", "forcings", "datasets")
DATASET_KEYS = ("label", "train", "test", "test_fraction", "test_trials", "standardize", "max_train_steps",
                "max_test_steps", "dt", "simulate", "simulate_test", "lambda_max")
SET_BY_COMPARE = ("obs_dim", "seed", "generator")


@dataclass(frozen=True)
class RunSpec:
    """One run of a grid: what to build, how to train it and on which data.

    ``model``/``forcing`` are ``{"label", "name", "params"}``; ``dataset`` is the dataset entry
    with absolute paths; ``budget`` the ``TrainConfig`` fields without the seed; ``eval`` the
    ``EvalConfig`` fields.
    """

    model: dict
    forcing: dict
    dataset: dict
    seed: int
    budget: dict
    eval: dict

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def key(self) -> str:
        """Stable 12-hex-digit hash of what determines the result (labels excluded)."""
        ident = {"model": without_label(self.model), "forcing": without_label(self.forcing),
                 "dataset": without_label(self.dataset), "seed": self.seed, "budget": self.budget,
                 "eval": self.eval}
        text = json.dumps(ident, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    @property
    def group(self) -> tuple[str, str, str]:
        """(model, forcing, dataset) labels: the row of the results table this run belongs to."""
        return self.model["label"], self.forcing["label"], self.dataset["label"]

    @property
    def folder_name(self) -> str:
        name = "_".join([*self.group, f"seed{self.seed}"])
        return f"{slug(name)}-{self.key}"


@dataclass(frozen=True)
class Grid:
    """A checked grid (see the module docstring for the TOML layout)."""

    models: tuple
    forcings: tuple
    datasets: tuple
    seeds: tuple
    budget: dict
    eval: dict
    name: str = "grid"
    out_dir: Path | None = None

    def runs(self) -> list[RunSpec]:
        """All runs, ordered dataset, model, forcing, seed."""
        return [RunSpec(m, f, d, s, self.budget, self.eval)
                for d in self.datasets for m in self.models for f in self.forcings for s in self.seeds]


def without_label(entry: dict) -> dict:
    """A grid entry's settings without its display ``label`` (what identifies a run)."""
    return {k: v for k, v in entry.items() if k != "label"}


def slug(text: str) -> str:
    """``text`` as a file-name fragment: runs of other characters than ``[A-Za-z0-9.=-]`` become ``_``, at most 80."""
    return re.sub(r"[^A-Za-z0-9.=-]+", "_", text).strip("_")[:80]


def _label(name: str, params: dict) -> str:
    if not params:
        return name
    return f"{name}(" + ",".join(f"{k}={v}" for k, v in params.items()) + ")"


def read_grid_file(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"grid file {str(path)!r} does not exist")
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"grid file {str(path)!r} is not valid TOML: {err}") from None


def load_grid(grid, *, base_dir=None) -> Grid:
    """Read (if a path) and check a grid; every name is resolved before anything runs.

    Parameters
    ----------
    grid : str, Path or dict
        A TOML file or the already parsed table.
    base_dir : Path, optional
        Folder that relative data paths refer to (default: the grid file's folder, or the
        current folder for a dict).

    Raises
    ------
    ValueError
        Unknown top-level key, model, forcing, budget or evaluation field; missing entries;
        duplicate labels. FileNotFoundError: a data file does not exist.
    """
    from dsrecon.forcing import FORCINGS
    from dsrecon.models import MODELS

    if isinstance(grid, (str, os.PathLike)):
        base_dir = Path(grid).resolve().parent if base_dir is None else Path(base_dir)
        name = Path(grid).stem
        table = read_grid_file(grid)
    elif isinstance(grid, dict):
        base_dir = Path.cwd() if base_dir is None else Path(base_dir)
        name, table = "grid", dict(grid)
    else:
        raise ValueError(f"grid must be a TOML file path or a dict, got {type(grid).__name__}")
    unknown = sorted(set(table) - set(GRID_KEYS))
    if unknown:
        raise ValueError(f"grid: unknown key(s) {unknown}; valid keys: {', '.join(GRID_KEYS)}")
    models = _entries(table, "models", MODELS, "model")
    forcings = _entries(table, "forcings", FORCINGS, "forcing")
    datasets = tuple(_dataset(d, i, base_dir) for i, d in enumerate(_list(table, "datasets")))
    _unique(datasets, "datasets")
    seeds = _seeds(table.get("seeds", [0]))
    budget = _budget(table.get("budget"))
    evalcfg = _eval(table.get("eval", {}))
    out_dir = table.get("out_dir")
    return Grid(models, forcings, datasets, seeds, budget, evalcfg, name=str(table.get("name", name)),
                out_dir=(base_dir / out_dir) if out_dir else None)


def _list(table: dict, key: str) -> list:
    value = table.get(key)
    if not isinstance(value, list) or not value or not all(isinstance(v, dict) for v in value):
        raise ValueError(f"grid: need a non-empty list of [[{key}]] tables, got {value!r}")
    return value


def _entries(table: dict, key: str, registry: dict, what: str) -> tuple:
    out = []
    for i, entry in enumerate(_list(table, key)):
        if "name" not in entry:
            raise ValueError(f"grid: {key}[{i}] has no name; valid names: {', '.join(sorted(registry))}")
        name = str(entry["name"]).lower()
        if name not in registry:
            raise ValueError(f"grid: {key}[{i}]: unknown {what} {entry['name']!r}; valid names: "
                             f"{', '.join(sorted(registry))}")
        params = {k: v for k, v in entry.items() if k not in ("name", "label")}
        fixed = sorted(set(params) & set(SET_BY_COMPARE))
        if fixed and what == "model":
            raise ValueError(f"grid: {key}[{i}] sets {fixed}, which compare fills in from the data "
                             "and the run's seed; remove them")
        out.append({"label": str(entry.get("label", _label(name, params))), "name": name, "params": params})
    _unique(out, key)
    return tuple(out)


def _unique(entries, key: str) -> None:
    labels = [e["label"] for e in entries]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise ValueError(f"grid: duplicate {key} label(s) {dup}; give each entry a distinct label")


def _dataset(entry: dict, i: int, base_dir: Path) -> dict:
    from dsrecon.data import BENCHMARK_SYSTEMS, RECORDINGS

    unknown = sorted(set(entry) - set(DATASET_KEYS))
    if unknown:
        raise ValueError(f"grid: datasets[{i}]: unknown key(s) {unknown}; valid keys: {', '.join(DATASET_KEYS)}")
    if "train" not in entry:
        raise ValueError(f"grid: datasets[{i}] needs train = a registered name "
                         f"({', '.join(RECORDINGS + BENCHMARK_SYSTEMS)}) or a data file")
    out = dict(entry)
    for key in ("train", "test"):
        if key in out:
            out[key] = _source(str(out[key]), base_dir, f"datasets[{i}].{key}")
    given = [key for key in ("test", "test_fraction", "test_trials") if key in out]
    if len(given) > 1:
        raise ValueError(f"grid: datasets[{i}] gives {' and '.join(given)}; keep one way to choose the test part")
    if "test_trials" in out:
        held = out["test_trials"]
        if not (isinstance(held, int) and held >= 1) and not (
                isinstance(held, list) and held and all(isinstance(k, int) and k >= 0 for k in held)):
            raise ValueError(f"grid: datasets[{i}].test_trials must be a count of last trials to hold out (an integer "
                             f">= 1) or a list of trial indices, got {held!r}")
    elif "test" not in out:
        out["test_fraction"] = float(out.get("test_fraction", 0.2))
    out["standardize"] = bool(out.get("standardize", False))
    for key, source in (("simulate", "train"), ("simulate_test", "test")):
        if key in out and (not isinstance(out[key], dict) or out.get(source) not in BENCHMARK_SYSTEMS):
            raise ValueError(f"grid: datasets[{i}].{key} (keyword arguments of dsrecon.simulate) needs a table "
                             f"and {source} = a benchmark system ({', '.join(BENCHMARK_SYSTEMS)})")
    if out.get("test") in BENCHMARK_SYSTEMS and "simulate_test" not in out:
        sim = dict(out.get("simulate", {}))
        sim["seed"] = int(sim.get("seed", 0)) + 1  # an independent initial condition
        out["simulate_test"] = sim
    for key in ("max_train_steps", "max_test_steps"):
        if key in out and (not isinstance(out[key], int) or out[key] < 2):
            raise ValueError(f"grid: datasets[{i}].{key} must be an integer >= 2, got {out[key]!r}")
    out.setdefault("label", Path(entry["train"].split(":")[0]).stem or entry["train"])
    return out


def _source(text: str, base_dir: Path, where: str) -> str:
    from dsrecon.data import BENCHMARK_SYSTEMS, RECORDINGS

    if text.lower() in RECORDINGS + BENCHMARK_SYSTEMS:
        return text.lower()
    path_text, sep, key = text.partition(":") if not re.match(r"^[A-Za-z]:\\", text) else (text, "", "")
    path = Path(path_text)
    path = path if path.is_absolute() else (base_dir / path).resolve()
    if not (path.is_file() or (path.is_dir() and not sep)):  # a folder: one trial per file
        raise FileNotFoundError(f"grid: {where}: data file or folder {str(path)!r} does not exist (relative paths are "
                                f"resolved against {str(base_dir)!r}); registered names: "
                                f"{', '.join(RECORDINGS + BENCHMARK_SYSTEMS)}")
    return str(path) + (sep + key if sep else "")


def _seeds(value) -> tuple:
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise ValueError(f"grid: seeds = {value}: a count must be >= 1")
        return tuple(range(value))
    if (not isinstance(value, list) or not value
            or not all(isinstance(s, int) and not isinstance(s, bool) for s in value)):
        raise ValueError(f"grid: seeds must be a list of integers or a count, got {value!r}")
    if len(set(value)) != len(value):
        raise ValueError(f"grid: seeds {value} contain duplicates")
    return tuple(value)


def _budget(value) -> dict:
    from dsrecon.training import TrainConfig

    valid = [f.name for f in dataclasses.fields(TrainConfig) if f.name != "seed"]
    if not isinstance(value, dict) or "epochs" not in value:
        raise ValueError("grid: need a [budget] table with at least epochs (the training budget every "
                         f"run shares); valid fields: {', '.join(valid)}")
    unknown = sorted(set(value) - set(valid))
    if unknown:
        raise ValueError(f"grid: [budget] unknown field(s) {unknown} (the seed comes from seeds); "
                         f"valid fields: {', '.join(valid)}")
    TrainConfig(**value)  # the dataclass checks the values
    return dict(value)


def _eval(value) -> dict:
    from dsrecon.evaluation import EvalConfig

    valid = [f.name for f in dataclasses.fields(EvalConfig)]
    if not isinstance(value, dict):
        raise ValueError(f"grid: [eval] must be a table of EvalConfig fields, got {value!r}")
    unknown = sorted(set(value) - set(valid))
    if unknown:
        raise ValueError(f"grid: [eval] unknown field(s) {unknown}; valid fields: {', '.join(valid)}")
    EvalConfig(**value)
    return dict(value)


__all__ = ["Grid", "RunSpec", "load_grid", "read_grid_file"]
