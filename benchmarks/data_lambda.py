"""The data's lambda_max estimate of ``dsrecon fit`` (``inspect_data(...).lambda_max``) against the true
value from the equations, on every simulated system of the reconstruction zoo, old rule vs new rule.

Old rule: Rosenstein's divergence curve followed for 10 mutual-information (MI) times over the first
10,000 points, line fitted from the first MI time on (the settings ``dsrecon.inspection`` used
before the fit window was chosen from the curve). New rule: ``dsrecon.inspect_data`` as it is in the
checked-out package (see ``dsrecon.inspection._lambda_max``'s docstring).

Data are the zoo's training series (``zoo_systems.simulate_zoo(system, 0, system.n_train)``, with
the zoo's noise), read from the zoo's cache folder when there, else simulated (and not written
there unless ``--write-cache``). The true lambda_max is read from the zoo's cache of true exponents
(``true_lyapunov.json``), else from a zoo results jsonl (``--true-from``), else computed by
``zoo_systems.cached_true_exponents``. With ``--clean``, the noisy systems are also measured
without noise (not zoo data sets). Mackey-Glass is scalar (embedded by the estimate). The two
recordings (Santa Fe laser, ECG) have no true value: their estimates are listed for reference.

Usage (from the project root)::

    python benchmarks/data_lambda.py                       # every system, results file under results/
    python benchmarks/data_lambda.py --cache /tmp/zoo_cache --clean
    python benchmarks/data_lambda.py --only lorenz63,chua --no-write
    python benchmarks/data_lambda.py --sensitivity         # and the new rule with its constants moved
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import provenance  # noqa: E402
import zoo  # noqa: E402
import zoo_systems  # noqa: E402

DEFAULT_TRUE_FROM = ROOT / "benchmarks" / "results" / "zoo_2026-12-07_a51ff3c_runs.jsonl"
CLEAN_VARIANTS = ("rossler_noise5", "halvorsen_noise10", "thomas_noise5", "lorenz63_coarse")
# --sensitivity: each constant of the new rule moved one way and the other, the rest at their defaults
SENSITIVITY = ({"SATURATION_MARGIN": 0.5}, {"SATURATION_MARGIN": 1.5}, {"SAMPLES_PER_MI": 4}, {"SAMPLES_PER_MI": 16},
               {"FOLLOW_MI_TIMES": 20}, {"FOLLOW_MI_TIMES": 80})


def old_estimate(series: np.ndarray, dt: float | None) -> float | None:
    """lambda_max by the old rule (fixed window: 10 MI times followed, fit from the first on), per
    time unit (per step when ``dt`` is None)."""
    from dsrecon.inspection import time_scales
    from dsrecon.rosenstein import rosenstein_lambda_max

    data = series[:, None] if series.ndim == 1 else series
    std = data.std(axis=0)
    z = (data - data.mean(axis=0)) / np.where(std > 0, std, 1.0)
    mi, acf = time_scales(z[:, 0])
    lag = mi or acf
    if lag is None:
        return None
    emb_dim = 1 if z.shape[1] >= 3 else math.ceil(6 / z.shape[1])
    zz = z[:10_000] - z[:10_000].mean(axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        lam = rosenstein_lambda_max(zz, emb_dim=emb_dim, lag=lag, trajectory_len=10 * lag + 1, fit_offset=lag,
                                    tau=dt or 1.0)
    return lam if math.isfinite(lam) else None


def true_value(system, cache_dir: Path, true_from: Path | None) -> tuple[float, str]:
    """The true lambda_max per time unit and where it came from (cache, jsonl, or computed now)."""
    cache_file = cache_dir / "true_lyapunov.json"
    if cache_file.exists():
        cached = json.loads(cache_file.read_text())
        if zoo_systems.true_exponents_key(system) in cached:
            return float(cached[zoo_systems.true_exponents_key(system)][0]), "cache"
    if true_from is not None and true_from.exists():
        for line in true_from.read_text().splitlines():
            row = json.loads(line) if line.strip() else {}
            if row.get("name") == system.name and row.get("lambda_true"):
                return float(row["lambda_true"][0]), f"{true_from.name}"
    return float(zoo_systems.cached_true_exponents(system, cache_file)[0]), "computed"


def train_series(system, cache_dir: Path, write_cache: bool) -> np.ndarray:
    """The zoo's training series of ``system``, ``(n_train, D)`` (``(n_train,)`` for a scalar system)."""
    x = zoo.cached_series(system, 0, system.n_train, cache_dir, write=write_cache)
    return x[:, 0] if system.dim == 1 else x


def measure(label: str, series: np.ndarray, dt: float | None, lam_true: float | None, source: str) -> dict:
    from dsrecon.inspection import inspect_data

    t0 = time.perf_counter()
    old = old_estimate(series, dt)
    t_old = time.perf_counter() - t0
    t1 = time.perf_counter()
    summary = inspect_data(series, dt=dt)
    t_new = time.perf_counter() - t1
    row = {"name": label, "dt": dt, "T": int(len(series)), "N": 1 if series.ndim == 1 else int(series.shape[1]),
           "true": lam_true, "true_from": source, "old": old, "new": summary.lambda_max,
           "units": summary.lambda_max_units, "note": summary.lambda_max_note, "old_s": round(t_old, 2),
           "new_s": round(t_new, 2)}
    print(f"{label}: true {zoo.number_text(lam_true)} old {zoo.number_text(old)} ({zoo.number_text(_ratio(old, lam_true), '.2f')}) new "
          f"{zoo.number_text(summary.lambda_max)} ({zoo.number_text(_ratio(summary.lambda_max, lam_true), '.2f')}) {row['units']}; "
          f"{summary.lambda_max_note}; {t_old:.1f} s / {t_new:.1f} s", flush=True)
    return row


def _ratio(est, true):
    return None if est is None or true is None or not math.isfinite(est) else est / true


def summary_counts(rows: list[dict], key: str) -> tuple[int, int, int]:
    """(within 30 %, within a factor 2, systems with a true value) of the estimate ``key``."""
    scored = [r for r in rows if r["true"] is not None]
    r30 = sum(1 for r in scored if (q := _ratio(r[key], r["true"])) is not None and abs(q - 1) <= 0.30)
    f2 = sum(1 for r in scored if (q := _ratio(r[key], r["true"])) is not None and 0.5 <= q <= 2.0)
    return r30, f2, len(scored)


def write_table(rows: list[dict], path: Path, command: str, commit: str) -> str:
    date = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = ["# The data's lambda_max (inspect_data): old fixed window vs fit window from the curve", "",
             f"- command: `{command}`", f"- date: {date}; commit: {commit}",
             "- data: the zoo's training series (its noise); true lambda_max from the equations (Benettin/QR, "
             "the zoo's cached values); recordings without a true value for reference",
             "- old: divergence followed 10 MI times over the first 10,000 points, line from the first MI time on; "
             "new: `dsrecon.inspection.inspect_data(train, dt=dt).lambda_max` of this commit", "",
             "| data set | T, N | dt | true | old | old / true | new | new / true | new's settings | time old / new |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['name']} | {r['T']:,}, {r['N']} | {zoo.number_text(r['dt'], '.4g') if r['dt'] else 'unknown'} | "
                     f"{zoo.number_text(r['true'])} | {zoo.number_text(r['old'])} | {zoo.number_text(_ratio(r['old'], r['true']), '.2f')} | "
                     f"{zoo.number_text(r['new'])} | {zoo.number_text(_ratio(r['new'], r['true']), '.2f')} | {r['note']} | "
                     f"{r['old_s']:.1f} / {r['new_s']:.1f} s |")
    o30, o2, n = summary_counts(rows, "old")
    n30, n2, _ = summary_counts(rows, "new")
    zoo_rows = [r for r in rows if not r["name"].endswith("(clean)")]
    zo30, zo2, zn = summary_counts(zoo_rows, "old")
    zn30, zn2, _ = summary_counts(zoo_rows, "new")
    text = (f"within 30 % of the true value: old {o30} of {n}, new {n30} of {n}; within a factor 2: old {o2} of {n}, "
            f"new {n2} of {n}" + (f" (zoo data sets only: 30 % old {zo30} / new {zn30}, factor 2 old {zo2} / new {zn2}, "
                                  f"of {zn})" if zn != n else ""))
    lines += ["", f"**{text}**", "", "Units: per time unit, per step where dt is unknown (Santa Fe). n/a: no estimate "
              "(the new rule returns None where the neighbours start within one e-fold of saturation)."]
    path.write_text("\n".join(lines) + "\n")
    return text


def sensitivity(series: dict, truths: dict, dts: dict) -> list[str]:
    """Markdown lines: the new rule's ratios to the true value with each constant of
    :data:`SENSITIVITY` changed (zoo systems only), to show how much the result hangs on them."""
    from dsrecon import inspection
    from dsrecon.inspection import inspect_data

    defaults = {k: getattr(inspection, k) for k in ("SATURATION_MARGIN", "SAMPLES_PER_MI", "FOLLOW_MI_TIMES")}
    lines = ["", "## Sensitivity of the new rule to its constants (zoo systems)", "",
             "| setting | " + " | ".join(series) + " | within 30 % | within x2 |",
             "|---|" + "---|" * (len(series) + 2)]
    for variant in ({},) + SENSITIVITY:
        for key, value in {**defaults, **variant}.items():
            setattr(inspection, key, value)
        ratios = [_ratio(inspect_data(x, dt=dts[n]).lambda_max, truths[n]) for n, x in series.items()]
        w30 = sum(1 for q in ratios if q is not None and abs(q - 1) <= 0.30)
        f2 = sum(1 for q in ratios if q is not None and 0.5 <= q <= 2.0)
        label = ", ".join(f"{k} = {v}" for k, v in variant.items()) or "defaults " + ", ".join(
            f"{k} = {v}" for k, v in defaults.items())
        lines.append(f"| {label} | " + " | ".join(zoo.number_text(q, ".2f") for q in ratios) + f" | {w30} | {f2} |")
        print(lines[-1], flush=True)
    for key, value in defaults.items():
        setattr(inspection, key, value)
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", help="comma-separated zoo systems (default: all simulated ones and the recordings)")
    p.add_argument("--cache", type=Path, default=zoo.CACHE, help=f"the zoo's cache folder (default {zoo.CACHE})")
    p.add_argument("--true-from", type=Path, default=DEFAULT_TRUE_FROM,
                   help="a zoo results jsonl whose lambda_true is used where the cache has none")
    p.add_argument("--write-cache", action="store_true", help="store simulated series in the cache folder")
    p.add_argument("--clean", action="store_true", help="also the noisy systems without noise (not zoo data sets)")
    p.add_argument("--no-write", action="store_true", help="print only, no results file")
    p.add_argument("--sensitivity", action="store_true",
                   help="also rerun the new rule with each of its constants changed (SENSITIVITY), zoo systems only")
    args = p.parse_args(argv)
    names = [n for n in zoo_systems.ZOO_SYSTEMS] + list(zoo.RECORDINGS)
    if args.only:
        names = [s.strip() for s in args.only.split(",") if s.strip()]
        unknown = [n for n in names if n not in zoo_systems.ZOO_SYSTEMS and n not in zoo.RECORDINGS]
        if unknown:
            p.error(f"unknown data set(s) {', '.join(unknown)}; valid: {', '.join(list(zoo_systems.ZOO_SYSTEMS) + list(zoo.RECORDINGS))}")
    commit = provenance.commit()
    command = "python benchmarks/data_lambda.py " + " ".join(argv if argv is not None else sys.argv[1:])
    rows, zoo_series = [], {}
    for name in names:
        if name in zoo.RECORDINGS:
            if name == "ecg" and not (zoo.ECG_DIR / "ECG_pecuzal_5d_train.npy").exists():
                print(f"ecg: {zoo.ECG_DIR} not found, skipped")
                continue
            data = zoo.load_data_set(name, quick=False)
            rows.append(measure(name, np.asarray(data["train"], dtype=np.float64), data["dt"], None, "recording"))
            continue
        system = zoo_systems.ZOO_SYSTEMS[name]
        lam, source = true_value(system, args.cache, args.true_from)
        zoo_series[name] = (train_series(system, args.cache, args.write_cache), lam, system.dt)
        rows.append(measure(name, zoo_series[name][0], system.dt, lam, source))
        if args.clean and name in CLEAN_VARIANTS:
            clean = replace(system, noise=0.0)
            rows.append(measure(f"{name} (clean)", train_series(clean, args.cache, False), system.dt, lam, source))
    o30, o2, n = summary_counts(rows, "old")
    n30, n2, _ = summary_counts(rows, "new")
    print(f"\nwithin 30 %: old {o30} / new {n30} of {n}; within a factor 2: old {o2} / new {n2} of {n}")
    if not args.no_write:
        date = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d")
        path = ROOT / "benchmarks" / "results" / f"data_lambda_{date}_{commit}.md"
        write_table(rows, path, command, commit)
        if args.sensitivity:
            extra = sensitivity({n: v[0] for n, v in zoo_series.items()}, {n: v[1] for n, v in zoo_series.items()},
                                {n: v[2] for n, v in zoo_series.items()})
            path.write_text(path.read_text() + "\n".join(extra) + "\n")
        print(f"table: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
