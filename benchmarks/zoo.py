"""The reconstruction zoo (issue 16, item 5): ``dsrecon.fit`` with the command line's defaults only, on
simulated chaotic systems chosen to differ and on real recordings, each against its noise floor.

Each data set is fitted exactly as ``dsrecon fit TRAIN --test TEST --dt DT`` fits it:
``dsrecon.fit(train, test=test, dt=dt, run_dir=..., progress=False)`` with one torch thread (the
command line's ``--threads`` default) and nothing else, so the default budget, epochs, latent size,
forcing and embedding all apply. Data go in in their own units (fit standardizes with the training
part's statistics).

Per data set it records D_stsp and D_H of the model's free run against the test data (fit's
evaluation, ``metrics.json``), the noise floor of both (the same metric functions and settings,
``EvalConfig()``, between the test data and a third independent trajectory of a system, or between
the test part and the adjacent segment before it of a recording, both mapped into the model's
coordinates by the fit's own transform), lambda_max of the model (fit's QR estimate, per time unit
when dt is known) and of the data (the true value from the equations, :mod:`zoo_systems`; and
fit's Rosenstein estimate on the training data), the flags, the epochs (and whether the budget cut
them) and the wall time.

A data set counts as **reconstructed** (:func:`reconstructed`) when the model's lambda_max has the
data's sign and lies within 30 % of it (the true value for a simulated system, Rosenstein's
estimate for a recording), and its D_H is at most twice its floor.

Usage (from the project root)::

    python benchmarks/zoo.py                       # every data set, in the order of DATA_SETS
    python benchmarks/zoo.py --only lorenz63,chua
    python benchmarks/zoo.py --resume              # skip (data set, seed) fits already in the jsonl
    python benchmarks/zoo.py --table-only          # rewrite the table from the jsonl
    python benchmarks/zoo.py --quick --only lorenz63   # smoke test: short data, 3 epochs
    python benchmarks/zoo.py --seeds 3             # every data set with fit seeds 0, 1, 2

One fit of a data set is one draw: its seed (model initialization, windows) decides between a
good and a failed reconstruction often enough that a difference of one or two data sets between
two passes is not a difference of the settings. ``--seeds K`` fits every data set with K seeds;
the table then gives, per data set, the share of its seeds reconstructed, and the headline counts
the data sets reconstructed by a majority of their seeds.

Each finished data set is appended to ``benchmarks/results/<stem>_runs.jsonl`` (stem
``zoo_<date>_<commit>``, or ``--stem``) as soon as it ends; the table goes to ``<stem>.md``. With
``--quick`` both go under ``benchmarks/runs/`` instead and are marked quick. Run folders of the fits:
``benchmarks/runs/zoo/<stem>/<data set>/``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import statistics
import sys
import time
import traceback
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np

from dsrecon.checkpoint import finite_or_none
from dsrecon.defaults import SEED as DEFAULT_SEED  # the seed of a fit that gives none

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import provenance  # noqa: E402
import zoo_systems  # noqa: E402

ECG_DIR = ROOT.parent / "shared" / "data" / "gtf_icml2023"
ECG_DT = 1.0 / 700.0  # seconds: the recording was sampled at 700 Hz (the data folder's README)
CACHE = ROOT / "benchmarks" / "runs" / "zoo_cache"
LAMBDA_TOLERANCE = 0.30  # |lambda_model - lambda_data| <= 30 % of |lambda_data|
FLOOR_FACTOR = 2.0  # D_H <= 2 x its noise floor
RECORDINGS = ("santafe", "ecg")
# cheap and varied first, the most expensive (fine sampling, 20-d) last
DATA_SETS = ("lorenz63", "rossler_noise5", "santafe", "mackey_glass", "lorenz63_coarse", "halvorsen_noise10",
             "chua", "rossler_hyperchaos", "thomas_noise5", "lorenz84", "hindmarsh_rose", "ecg", "lorenz63_fine",
             "lorenz96_n20")
QUICK_TRAIN, QUICK_TEST, QUICK_EPOCHS = 3_000, 1_000, 3


# --------------------------------------------------------------------------- the rule
def reconstructed(lambda_model, lambda_data, d_h, d_h_floor, *, tolerance: float = LAMBDA_TOLERANCE,
                  floor_factor: float = FLOOR_FACTOR) -> tuple[bool, str]:
    """Whether a fit reconstructed its data, and why not: ``(ok, reason)`` (reason ``""`` when ok).

    ok when ``lambda_model`` has the sign of ``lambda_data`` and ``|lambda_model - lambda_data| <=
    tolerance |lambda_data|``, and ``d_h <= floor_factor * d_h_floor``. A missing (None) or
    non-finite value, or ``lambda_data == 0``, is not ok.
    """
    def bad(v):
        return v is None or not isinstance(v, (int, float)) or not math.isfinite(v)

    reasons = []
    if bad(lambda_model) or bad(lambda_data) or lambda_data == 0:
        reasons.append("lambda_max missing")
    elif math.copysign(1.0, lambda_model) != math.copysign(1.0, lambda_data) or lambda_model == 0:
        reasons.append("lambda_max of the wrong sign")
    elif abs(lambda_model - lambda_data) > tolerance * abs(lambda_data):
        reasons.append(f"lambda_max off by {abs(lambda_model - lambda_data) / abs(lambda_data):.0%}")
    if bad(d_h) or bad(d_h_floor) or d_h_floor <= 0:
        reasons.append("D_H or its floor missing")
    elif d_h > floor_factor * d_h_floor:
        reasons.append(f"D_H {d_h / d_h_floor:.1f}x floor")
    return not reasons, "; ".join(reasons)


# --------------------------------------------------------------------------- data
def load_data_set(name: str, quick: bool) -> dict:
    """Raw train, test and floor-reference series of a data set, in their own units, with dt (None:
    unknown) and how each part was made."""
    if name == "santafe":
        from dsrecon import load

        x = np.asarray(load("santafe").x, dtype=np.float64)[:, 0]  # (T,), 8-bit intensities
        if quick:
            x = x[:4_000]
        n_test = len(x) // 5  # the command line's --test-fraction 0.2
        train, test = x[:-n_test], x[-n_test:]
        return {"train": train, "test": test, "floor": train[-n_test:], "dt": None, "noise": None,
                "what": "Santa Fe laser A (reservoirpy), scalar, dt unknown (per step); last 20 % test",
                "floor_from": "test vs the adjacent segment before it (end of training part)"}
    if name == "ecg":
        train = np.load(ECG_DIR / "ECG_pecuzal_5d_train.npy")
        test = np.load(ECG_DIR / "ECG_pecuzal_5d_test.npy")
        if quick:
            train, test = train[:QUICK_TRAIN], test[:QUICK_TEST]
        return {"train": train, "test": test, "floor": train[-len(test):], "dt": ECG_DT, "noise": None,
                "what": "ECG 700 Hz, 5-d PECUZAL embedding (GTF paper files), dt 1/700 s",
                "floor_from": "test file vs the adjacent end of the training file"}
    system = zoo_systems.ZOO_SYSTEMS[name]
    n_train, n_test = (QUICK_TRAIN, QUICK_TEST) if quick else (system.n_train, system.n_test)
    parts = {part: cached_series(system, which, n) for which, part, n in
             ((0, "train", n_train), (1, "test", n_test), (2, "floor", n_test))}
    if system.dim == 1:
        parts = {k: v[:, 0] for k, v in parts.items()}  # observed as a scalar: fit must embed it
    return {**parts, "dt": system.dt, "noise": system.noise, "what": system.what,
            "floor_from": "test vs a third independent trajectory (same length and noise)"}


PARTS = ("train", "test", "floor")  # trajectory 0, 1, 2 of a system (independent starts)


def cached_series(system, which: int, n_steps: int, cache_dir: Path = CACHE, write: bool = True) -> np.ndarray:
    """Trajectory ``which`` (0 train, 1 test, 2 floor) of a zoo system, ``(n_steps, D)``: read from
    ``cache_dir`` when there, else simulated and (``write``) stored. Only the zoo's own systems are
    cached: a variant (e.g. without noise) under the same name is simulated every time."""
    path = Path(cache_dir) / f"{system.name}_{PARTS[which]}_{n_steps}.npy"
    own = zoo_systems.ZOO_SYSTEMS.get(system.name) == system
    if own and path.exists():
        return np.load(path)
    x = zoo_systems.simulate_zoo(system, which, n_steps)
    if own and write:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, x)
    return x


def true_lambda(name: str, quick: bool) -> list | None:
    if name in RECORDINGS:
        return None
    system = zoo_systems.ZOO_SYSTEMS[name]
    if quick:  # a short estimate, not cached
        return [float(v) for v in zoo_systems.true_exponents(replace(system, lyap=(system.lyap[0] / 20, system.lyap[1])))]
    return zoo_systems.cached_true_exponents(system, CACHE / "true_lyapunov.json")


# --------------------------------------------------------------------------- one data set
def noise_floor(transform, test_raw, floor_raw) -> dict:
    """D_stsp and D_H between the test data and the floor reference, both mapped into the model's
    coordinates by the fit's transform, with fit's evaluation settings (``EvalConfig()``)."""
    from dsrecon.evaluation import EvalConfig
    from dsrecon.metrics import hellinger_distance, state_space_divergence

    cfg = EvalConfig()
    a, b = transform.to_model(test_raw), transform.to_model(floor_raw)  # (T', k N) each
    n = min(len(a), len(b))
    a, b = a[:n], b[:n]
    return {"d_stsp": float(state_space_divergence(a, b, n_bins=cfg.n_bins, method=cfg.dstsp_method,
                                                   smoothing=cfg.smoothing, seed=cfg.seed)),
            "d_h": float(hellinger_distance(a, b, sigma=cfg.sigma)), "n_steps": int(n)}


def run_one(name: str, run_dir: Path, quick: bool, fit_options: dict | None = None, seed: int = 0) -> dict:
    import torch

    import dsrecon

    t0 = time.perf_counter()
    data = load_data_set(name, quick)
    t_data = time.perf_counter() - t0
    t1 = time.perf_counter()
    lam_true = true_lambda(name, quick)
    t_lyap = time.perf_counter() - t1
    torch.set_num_threads(1)  # what `dsrecon fit` does with its default --threads 1
    extra = {"epochs": QUICK_EPOCHS} if quick else {}
    extra.update(fit_options or {})
    t2 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rec = dsrecon.fit(data["train"], test=data["test"], dt=data["dt"], run_dir=run_dir, progress=False, seed=seed,
                          **extra)
    t_fit = time.perf_counter() - t2
    floor = noise_floor(rec.transform, data["test"], data["floor"])
    metrics = rec.reports["test"]
    summary = rec.reports.get("data") or {}
    budget = rec.settings.get("budget") or {}
    emb = rec.settings.get("embedding") or {}
    lat = rec.settings.get("latent") or {}
    train = np.asarray(data["train"])
    lam_model = metrics.get("lambda_max_model")
    lam_ros = summary.get("lambda_max")
    lam_ref = lam_true[0] if lam_true else lam_ros
    ok, why = reconstructed(lam_model, lam_ref, metrics.get("d_h"), floor["d_h"])
    return {
        "name": name, "seed": seed, "quick": quick, "what": data["what"], "N": 1 if train.ndim == 1 else int(train.shape[1]),
        "model_N": int(rec.transform.model_dim), "T_train": int(len(train)), "T_test": int(len(data["test"])),
        "dt": data["dt"], "noise": data["noise"], "delays": list(emb.get("delays", [0])) if emb else [0],
        "latent_dim": lat.get("latent_dim"), "observation": lat.get("observation"),
        "epochs": int(rec.settings["train"]["epochs"]), "epochs_requested": budget.get("requested_epochs"),
        "budget_capped": bool(budget.get("requested_epochs") is not None
                              and budget.get("epochs") is not None
                              and budget["epochs"] < budget["requested_epochs"]),
        "budget": budget, "epochs_trained": len(rec.history),
        "d_stsp": metrics.get("d_stsp"), "d_h": metrics.get("d_h"), "pe": metrics.get("pe"),
        "floor_d_stsp": floor["d_stsp"], "floor_d_h": floor["d_h"], "floor_steps": floor["n_steps"],
        "floor_from": data["floor_from"], "compared_steps": metrics.get("n_steps"),
        "lambda_max_model": lam_model, "lyapunov_units": metrics.get("lyapunov_units"),
        "lambda_true": lam_true, "lambda_rosenstein": lam_ros, "lambda_rosenstein_units": summary.get("lambda_max_units"),
        "lambda_reference": "true (equations)" if lam_true else "Rosenstein (fit's, training data)",
        "std_ratio": metrics.get("std_ratio"), "flags": sorted((metrics.get("flags") or {})),
        "flag_texts": metrics.get("flags") or {}, "diverged": rec.diverged,
        "reconstructed": ok, "why_not": why,
        "warnings": [f"{w.category.__name__}: {w.message}" for w in caught][:10],
        "wall_s": round(time.perf_counter() - t0, 1), "fit_s": round(t_fit, 1), "data_s": round(t_data, 1),
        "true_lyapunov_s": round(t_lyap, 1), "run_dir": str(run_dir.relative_to(ROOT)),
    }


# --------------------------------------------------------------------------- table
def number_text(v, fmt=".3g") -> str:
    """``v`` formatted, or "n/a" for a missing or non-finite value."""
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, fmt)


def _ratio(a, b):
    """``a / b``; None without a finite positive floor ``b``; infinite when ``a`` is undefined (the D_H of
    a collapsed or diverged free run is NaN: it counts as the worst, not as absent)."""
    if b is None or not math.isfinite(b) or b <= 0:
        return None
    return math.inf if a is None or not math.isfinite(a) else a / b


def seed_of(row: dict) -> int:
    """The fit seed of a row (rows written before ``--seeds`` existed used the default seed)."""
    return int(row.get("seed", DEFAULT_SEED))


def by_data_set(rows: list[dict]) -> dict:
    """``{data set: [its rows, by seed]}`` in the order the rows came."""
    out = {}
    for r in rows:
        out.setdefault(r["name"], []).append(r)
    return {k: sorted(v, key=seed_of) for k, v in out.items()}


def headline(rows: list[dict]) -> str:
    """Reconstructed data sets (by a majority of their seeds when there are several) and the median
    over data sets of their median D_H / floor (an undefined D_H counts as the worst)."""
    groups = by_data_set(rows)
    n_sets, ok_sets, ratios, undefined = len(groups), 0, [], 0
    n_runs = ok_runs = 0
    for runs in groups.values():
        done = [r for r in runs if "error" not in r]
        ok = sum(bool(r["reconstructed"]) for r in done)
        n_runs, ok_runs = n_runs + len(runs), ok_runs + ok
        ok_sets += ok > len(runs) / 2
        qs = [q for q in (_ratio(r["d_h"], r["floor_d_h"]) for r in done) if q is not None]
        if qs:
            med_set = statistics.median(qs)
            ratios.append(med_set)
            undefined += math.isinf(med_set)
    med = statistics.median(ratios) if ratios else None
    share = f"{ok_sets} of {n_sets} ({ok_sets / n_sets:.0%})" if n_sets else "0 of 0"
    runs_part = f" by a majority of their seeds ({ok_runs} of {n_runs} fits)" if n_runs > n_sets else ""
    return (f"reconstructed: {share}{runs_part}; median D_H / floor: "
            f"{number_text(med, '.2f') if med != math.inf else 'inf'} "
            f"(over {len(ratios)} data sets, {undefined} with D_H undefined counted as worst)")


def write_table(rows: list[dict], path: Path, command: str, commit: str, quick: bool, wanted,
                rewritten_by: str | None = None) -> None:
    date = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"# Reconstruction zoo{' (QUICK smoke run: not results)' if quick else ''}", "",
             f"- command: `{command}`" + (f" (this table rewritten from its jsonl by `{rewritten_by}`)"
                                           if rewritten_by else ""),
             f"- table written {date}; commit of the runs: {commit}",
             f"- machine: {platform.machine()}, {os.cpu_count()} CPU cores shared with other jobs "
             f"(load average {os.getloadavg()[0]:.1f} at writing); torch on CPU, 1 thread per fit",
             "- fit: `dsrecon.fit(train, test=test, dt=dt, run_dir=..., progress=False)` and the command's --fit "
             "options (none: nothing else, the "
             "defaults of `dsrecon fit TRAIN --test TEST --dt DT` (600 epochs, 10-minute training budget, "
             "GTF alpha 0.1, M = max(N, 10), automatic embedding of scalar series))",
             "- floor: D_stsp / D_H between the test data and an independent trajectory (systems) or the "
             "adjacent segment (recordings), same metric settings; lambda_max per time unit (per step where "
             "dt is unknown); 'true' from the equations (Benettin/QR), 'Rosenstein' fit's estimate on the "
             "training data",
             f"- reconstructed: lambda_max of the data's sign and within {LAMBDA_TOLERANCE:.0%} of it (true "
             f"value for systems, Rosenstein for recordings) and D_H <= {FLOOR_FACTOR:g} x floor", "",
             "| data set | seed | N (model) | T train / test | dt | noise | epochs | D_stsp / floor | D_H / floor "
             "| lambda_max model | true | Rosenstein | flags | reconstructed | wall |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    groups = by_data_set(rows)
    for r in (r for runs in groups.values() for r in runs):
        if "error" in r:
            lines.append(f"| {r['name']} | {seed_of(r)} | | | | | | | | | | | | error: {r['error'][:80]} | "
                         f"{number_text(r.get('wall_s'), '.0f')} s |")
            continue
        ep = f"{r['epochs_trained']}" + (f" (budget cut from {r['epochs_requested']})" if r["budget_capped"] else "")
        lam_true = r["lambda_true"][0] if r["lambda_true"] else None
        lines.append(
            f"| {r['name']} | {seed_of(r)} | {r['N']} ({r['model_N']}) | {r['T_train']:,} / {r['T_test']:,} | "
            f"{number_text(r['dt'], '.4g') if r['dt'] else 'unknown'} | {number_text(r['noise'], '.0%') if r['noise'] is not None else 'real'} | "
            f"{ep} | {number_text(r['d_stsp'])} / {number_text(r['floor_d_stsp'])} | {number_text(r['d_h'])} / {number_text(r['floor_d_h'])} | "
            f"{number_text(r['lambda_max_model'])} | {number_text(lam_true)} | {number_text(r['lambda_rosenstein'])} | "
            f"{', '.join(r['flags']) or '-'} | {'yes' if r['reconstructed'] else 'no: ' + r['why_not']} | "
            f"{r['wall_s'] / 60:.1f} min |")
    missing = [n for n in wanted if n not in groups]
    if any(len(runs) > 1 for runs in groups.values()):
        lines += ["", "Per data set, over its seeds:", "", "| data set | seeds reconstructed | median D_H / floor |",
                  "|---|---|---|"]
        for name, runs in groups.items():
            qs = [q for q in (_ratio(r.get("d_h"), r.get("floor_d_h")) for r in runs if "error" not in r) if q is not None]
            ok = sum(bool(r.get("reconstructed")) for r in runs)
            med = statistics.median(qs) if qs else None
            lines.append(f"| {name} | {ok} of {len(runs)} | {'inf' if med == math.inf else number_text(med, '.2f')} |")
    lines += ["", f"**{headline(rows)}**"]
    if missing:
        lines += ["", f"Not finished (not in this table, not counted): {', '.join(missing)}."]
    lines += ["", "Data sets:", ""]
    for runs in groups.values():
        r = next((r for r in runs if "error" not in r), None)
        if r is not None:
            lines.append(f"- {r['name']}: {r['what']}; model coordinates {r['model_N']} (delays {r['delays']}), "
                         f"M = {r['latent_dim']} ({r['observation']}); lambda_max units {r['lyapunov_units']}; "
                         f"floor: {r['floor_from']}")
    path.write_text("\n".join(lines) + "\n")


# --------------------------------------------------------------------------- main
def read_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    latest = {}  # the last row of a (data set, seed) wins (a failed attempt, then a finished one)
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            key = (row["name"], seed_of(row))
            latest.pop(key, None)
            latest[key] = row
    return list(latest.values())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", help="comma-separated data sets (default all: " + ", ".join(DATA_SETS) + ")")
    p.add_argument("--quick", action="store_true", help="smoke test: short data, 3 epochs, written under benchmarks/runs/")
    p.add_argument("--resume", action="store_true", help="skip (data set, seed) fits already in the jsonl")
    p.add_argument("--table-only", action="store_true", help="only rewrite the table from the jsonl")
    p.add_argument("--fit", action="append", default=[], metavar="KEY=VALUE",
                   help="a non-default dsrecon.fit option for every data set (a candidate default; repeatable), "
                        "e.g. --fit forcing=agtf --fit population=8; values are parsed as JSON where they can be")
    p.add_argument("--seeds", type=int, default=1, help="fit seeds per data set (default 1: the default seed)")
    p.add_argument("--first-seed", type=int, default=DEFAULT_SEED, help=f"first fit seed (default {DEFAULT_SEED})")
    p.add_argument("--stem", help="file stem of the jsonl and table (default zoo_<date>_<commit>[_quick])")
    args = p.parse_args(argv)
    fit_options = {}
    for item in args.fit:
        key, sep, value = item.partition("=")
        if not sep or not key:
            p.error(f"--fit takes KEY=VALUE, got {item!r}")
        try:
            fit_options[key] = json.loads(value)
        except ValueError:
            fit_options[key] = value
    wanted = DATA_SETS if not args.only else tuple(s.strip() for s in args.only.split(",") if s.strip())
    unknown = [n for n in wanted if n not in DATA_SETS]
    if unknown:
        p.error(f"unknown data set(s) {', '.join(unknown)}; valid: {', '.join(DATA_SETS)}")
    commit = provenance.commit()
    date = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d")
    variant = "".join(f"_{k}{v}" for k, v in fit_options.items())
    stem = args.stem or f"zoo_{date}_{commit}{variant}" + ("_quick" if args.quick else "")
    out_dir = ROOT / "benchmarks" / ("runs" if args.quick else "results")
    out_dir.mkdir(parents=True, exist_ok=True)
    jsonl, table = out_dir / f"{stem}_runs.jsonl", out_dir / f"{stem}.md"
    command = "python benchmarks/zoo.py " + " ".join(argv if argv is not None else sys.argv[1:])
    rows = read_rows(jsonl)
    if args.table_only:  # the command and commit of the run that wrote the rows
        run_command = next((r["command"] for r in rows if "command" in r), "python benchmarks/zoo.py")
        run_commit = next((r["commit"] for r in rows if "commit" in r), commit)
        write_table(rows, table, run_command, run_commit, args.quick, wanted, rewritten_by=command)
        print(f"table: {table}\n{headline(rows)}")
        return 0
    if rows and not args.resume:
        p.error(f"{jsonl} already holds {len(rows)} data sets: pass --resume to continue it, or --stem for a new file")
    if args.seeds < 1:
        p.error(f"--seeds must be >= 1, got {args.seeds}")
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    done = {(r["name"], seed_of(r)) for r in rows if "error" not in r}
    rows = [r for r in rows if (r["name"], seed_of(r)) in done]  # failed ones are tried again
    for seed, name in ((seed, name) for seed in seeds for name in wanted):  # a whole pass per seed
        if (name, seed) in done:
            print(f"{name} (seed {seed}): already in {jsonl.name}, skipped")
            continue
        folder = name if seed == DEFAULT_SEED else f"{name}-seed{seed}"
        run_dir = ROOT / "benchmarks" / "runs" / "zoo" / stem / folder
        k = 1
        while run_dir.exists():  # an earlier, unfinished attempt keeps its folder
            run_dir, k = run_dir.with_name(f"{folder}-{k}"), k + 1
        print(f"\n===== {name} -> {run_dir.relative_to(ROOT)}", flush=True)
        t0 = time.perf_counter()
        try:
            row = run_one(name, run_dir, args.quick, fit_options, seed)
        except Exception as err:  # one failed data set must not lose the others
            traceback.print_exc()
            row = {"name": name, "seed": seed, "quick": args.quick, "error": f"{type(err).__name__}: {err}",
                   "wall_s": round(time.perf_counter() - t0, 1)}
        row["commit"], row["command"], row["fit_options"] = commit, command, fit_options
        rows.append(row)
        with jsonl.open("a") as fh:
            fh.write(json.dumps(finite_or_none(row), allow_nan=False) + "\n")
        write_table(rows, table, command, commit, args.quick, wanted)
        if "error" not in row:
            print(f"{name} (seed {seed}): D_stsp {number_text(row['d_stsp'])} (floor {number_text(row['floor_d_stsp'])}), D_H {number_text(row['d_h'])} "
                  f"(floor {number_text(row['floor_d_h'])}), lambda_max model {number_text(row['lambda_max_model'])} vs true "
                  f"{number_text(row['lambda_true'][0] if row['lambda_true'] else None)} / Rosenstein "
                  f"{number_text(row['lambda_rosenstein'])} {row['lyapunov_units']}; flags {row['flags'] or '-'}; "
                  f"reconstructed {row['reconstructed']} {row['why_not']}; {row['wall_s']:.0f} s", flush=True)
    print(f"\nresults: {jsonl}\ntable: {table}")
    print(headline(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
