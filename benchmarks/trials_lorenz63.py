"""Benchmark: Lorenz-63 in trials against one continuous series of the same length and budget.

Training data, in the system's own (unstandardized) units, dt = 0.01, each simulated by
``dsrecon.simulate_batch`` / ``dsrecon.simulate`` after a 50-time-unit transient:

* **trials**: 10 trajectories of 2,000 steps from independent initial conditions, given to
  ``dsrecon.fit`` as a list of arrays (a ``TrialSet``: windows drawn inside the trials,
  standardization pooled over them);
* **continuous**: one trajectory of 20,000 steps, given to ``dsrecon.fit`` as one array.

Both are fitted by ``dsrecon.fit`` with the same defaults (clipped shPLRNN M = 10, L = 50, GTF
alpha = 0.1, B = 16 windows of 200 steps, 50 updates per epoch, RAdam 3e-3 -> 1e-5), the same
number of epochs (``--epochs``, no time budget, so both make the same number of updates) and the
same seed, and evaluated on the same independent 20,000-step test trajectory (given as ``test=``,
standardized with each run's training statistics) by ``dsrecon.evaluate`` (D_stsp, D_H; the
Lyapunov spectrum is skipped to save time). The target (issue 17): the trials reach D_stsp and
D_H within 1.5x of the continuous series'.

Usage (from the project root)::

    python benchmarks/trials_lorenz63.py --epochs 150 --seeds 0 1
    python benchmarks/trials_lorenz63.py --quick          # 2 epochs, 1 seed: a smoke run

The table goes to ``benchmarks/results/trials_lorenz63_<date><tag>.md`` with the command, date and commit.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import provenance  # noqa: E402

N_TRIALS, TRIAL_STEPS, CONTINUOUS_STEPS, TEST_STEPS = 10, 2_000, 20_000, 20_000
DATA_SEED, TEST_SEED = 100, 200  # initial conditions of the training data and of the test trajectory
TARGET_RATIO = 1.5


def simulate_data():
    """(list of 10 trial arrays (2000, 3), continuous array (20000, 3), test Trajectory (20000, 3)), raw units."""
    import dsrecon

    trials = [t.x for t in dsrecon.simulate_batch("lorenz63", N_TRIALS, TRIAL_STEPS, seed=DATA_SEED,
                                                  standardize=False, progress=False)]
    continuous = dsrecon.simulate("lorenz63", CONTINUOUS_STEPS, seed=DATA_SEED, standardize=False, progress=False).x
    test = dsrecon.simulate("lorenz63", TEST_STEPS, seed=TEST_SEED, standardize=False, progress=False)
    return trials, continuous, test


def fit_one(data, test, seed: int, epochs: int) -> dict:
    import dsrecon
    from dsrecon.evaluation import EvalConfig

    start = time.perf_counter()
    rec = dsrecon.fit(data, test=test.x, dt=0.01, epochs=epochs, seed=seed, budget=None,
                      eval_config=EvalConfig(lyapunov=False), progress=False, verbose=False)
    report = rec.reports["test"]
    return {"d_stsp": float(report["d_stsp"]), "d_h": float(report["d_h"]), "seconds": time.perf_counter() - start,
            "final_loss": float(rec.history[-1]["loss"]), "flags": sorted(report.get("flags") or {})}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=150)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--quick", action="store_true", help="2 epochs, seed 0: a smoke run")
    p.add_argument("--tag", default="", help="suffix of the results file name")
    args = p.parse_args(argv)
    if args.quick:
        args.epochs, args.seeds, args.tag = 2, [0], args.tag or "_quick"
    command = "python benchmarks/trials_lorenz63.py " + " ".join(argv if argv is not None else sys.argv[1:])
    commit = provenance.commit()
    trials, continuous, test = simulate_data()
    rows = []
    for seed in args.seeds:
        for name, data in (("trials", trials), ("continuous", continuous)):
            res = fit_one(data, test, seed, args.epochs)
            rows.append({"seed": seed, "data": name, **res})
            print(json.dumps(rows[-1]), flush=True)
    date = _dt.date.today().isoformat()
    out = ROOT / "benchmarks" / "results" / f"trials_lorenz63_{date}{args.tag}.md"
    out.write_text(report(rows, args, command, commit, date))
    print(f"wrote {out}")
    return 0


def report(rows: list, args, command: str, commit: str, date: str) -> str:
    def med(name: str, key: str) -> float:
        return statistics.median(r[key] for r in rows if r["data"] == name)

    lines = [
        "# Lorenz-63 in trials vs one continuous series (issue 17, trials target)", "",
        f"Command: `{command}`  ", f"Date: {date}  ", f"Commit: {commit}  ",
        "Machine: shared 2-core CPU, other jobs running (times are indicative only)", "",
        f"Training data (raw units, dt 0.01, simulated after a 50-time-unit transient, data seed {DATA_SEED}): "
        f"**trials** = {N_TRIALS} trajectories of {TRIAL_STEPS:,} steps from independent initial conditions "
        f"(a list of arrays, windows inside trials, pooled standardization); **continuous** = one "
        f"{CONTINUOUS_STEPS:,}-step trajectory. Both by `dsrecon.fit` with its defaults (shPLRNN M = 10, "
        f"L = 50, GTF 0.1, B = 16 x 200 steps, 50 updates/epoch), {args.epochs} epochs each, no time budget "
        f"(equal updates), same model seed. Test: one independent {TEST_STEPS:,}-step trajectory (seed "
        f"{TEST_SEED}), D_stsp and D_H by `dsrecon.evaluate` (free run from the first test point, 25 % warm-up).",
        "",
        "| seed | data | D_stsp | D_H | final loss | flags | fit + eval (s) |",
        "|---:|---|---:|---:|---:|---|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['seed']} | {r['data']} | {r['d_stsp']:.3f} | {r['d_h']:.3f} | {r['final_loss']:.4f} | "
                     f"{', '.join(r['flags']) or '-'} | {r['seconds']:.0f} |")
    lines += ["", "| metric | trials (median) | continuous (median) | ratio trials / continuous | within 1.5x |",
              "|---|---:|---:|---:|---|"]
    for key, label in (("d_stsp", "D_stsp"), ("d_h", "D_H")):
        t, c = med("trials", key), med("continuous", key)
        ratio = t / c if c > 0 else float("inf")
        lines.append(f"| {label} | {t:.3f} | {c:.3f} | {ratio:.2f} | {'yes' if ratio <= TARGET_RATIO else 'no'} |")
    lines += ["", "Per seed, ratio trials / continuous: " + "; ".join(
        f"seed {s}: D_stsp {_ratio(rows, s, 'd_stsp'):.2f}, D_H {_ratio(rows, s, 'd_h'):.2f}"
        for s in args.seeds), ""]
    return "\n".join(lines)


def _ratio(rows: list, seed: int, key: str) -> float:
    t = next(r[key] for r in rows if r["seed"] == seed and r["data"] == "trials")
    c = next(r[key] for r in rows if r["seed"] == seed and r["data"] == "continuous")
    return t / c if c > 0 else float("inf")


if __name__ == "__main__":
    sys.exit(main())
