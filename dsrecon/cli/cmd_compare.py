"""``dsrecon compare GRID.toml``: run a comparison grid and print its results table."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "compare",
        help="train and evaluate a grid of models x forcings x datasets x seeds",
        description="Run every (model, forcing, dataset, seed) of a TOML grid under one shared training "
        "budget, in parallel, and aggregate D_stsp, D_H, PE(20), the lambda_max error, parameter count and "
        "training time over seeds into results.csv / results.md. Finished runs are never run again, so an "
        "interrupted grid continues where it stopped. Grid layout: see examples/grid_lorenz63.toml.",
    )
    p.add_argument("grid", help="grid file (TOML)")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="output folder (default: the grid's out_dir, else ./compare_<grid name>)")
    p.add_argument("--workers", type=int, default=None, metavar="K",
                   help="parallel runs (default: the available cores)")
    p.add_argument("--executor", choices=["process", "serial", "ray"], default="process",
                   help="worker processes (default), this process, or Ray tasks (pip install dsrecon[ray])")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-figure", action="store_true", help="skip the attractor/spectrum figure")
    p.add_argument("--no-retry", action="store_true", help="do not rerun runs that failed before")
    p.add_argument("--no-ensembles", action="store_true",
                   help="one task per shPLRNN seed (default: a configuration's seeds train as one ensemble)")
    return p


def run(args) -> int:
    from dsrecon.comparison import compare

    result = compare(args.grid, out_dir=args.out, executor=args.executor, workers=args.workers,
                     progress=not args.no_progress, figure=not args.no_figure, retry_failed=not args.no_retry,
                     ensembles=not args.no_ensembles)
    print(result.to_markdown())
    print(f"{result.n_executed} run(s) executed, {result.n_skipped} already finished, "
          f"{result.n_failed} failed; tables in {result.out_dir}")
    return 1 if result.n_failed else 0
