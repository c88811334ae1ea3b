"""Compare shPLRNN, LEM, LSTM and RNN on Lorenz-63 under one training budget.

    python examples/compare_lorenz63.py            # the grid in examples/grid_lorenz63.toml
    python examples/compare_lorenz63.py --quick    # a tiny version that runs in seconds

The grid file lists the models (about 350 parameters each), the forcing (adaptive GTF), the data
(a simulated Lorenz-63 trajectory with 5% observation noise, and an independent test trajectory)
and three seeds. ``dsrecon.compare`` runs every combination in parallel worker processes, each in
its own folder under ``--out``, and aggregates D_stsp, D_H, PE(20), the lambda_max error, the
parameter count and the training time over seeds. Stop it at any time and start it again: finished
runs are not repeated.

``--quick`` shrinks everything (a short, loosely integrated trajectory, two epochs of five
updates, one seed): it checks that the pipeline runs, its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import tomllib
from pathlib import Path

import dsrecon

GRID = Path(__file__).with_name("grid_lorenz63.toml")


def quick_version(grid: dict) -> dict:
    """The same grid with a budget of seconds."""
    grid = dict(grid, seeds=[0])
    grid["budget"] = {"epochs": 2, "batches_per_epoch": 5, "batch_size": 8, "seq_len": 50}
    grid["eval"] = {"lyapunov_steps": 100, "lyapunov_transient": 20, "lyapunov_initial": 2}
    fast = {"rtol": 1e-6, "atol": 1e-6, "transient": 20.0}
    (data,) = grid["datasets"]
    grid["datasets"] = [dict(data, simulate={**fast, "n_steps": 2000, "seed": 0, "noise": 0.05},
                             simulate_test={**fast, "n_steps": 1000, "seed": 1},
                             lambda_max=0.9056)]  # literature value (SPEC section 1), skips Rosenstein
    return grid


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny budget, for a smoke test")
    parser.add_argument("--out", default="compare_lorenz63", help="output folder")
    parser.add_argument("--workers", type=int, default=None, help="parallel runs (default: all cores)")
    args = parser.parse_args(argv)

    with open(GRID, "rb") as f:
        grid = tomllib.load(f)
    if args.quick:
        grid = quick_version(grid)
    result = dsrecon.compare(grid, out_dir=args.out, workers=args.workers, progress=not args.quick)
    print(result.to_markdown())
    print(f"tables and figure in {result.out_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
