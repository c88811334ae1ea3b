"""Benchmark: shPLRNN, LEM, LSTM and RNN trained with GTF, and an LSTM with plain teacher forcing,
on the GTF paper's Lorenz-63 files, with equal budgets.

    python benchmarks/compare_lorenz63.py                 # 300 epochs x 50 updates, 3 seeds
    python benchmarks/compare_lorenz63.py --epochs 1000 --workers 8
    python benchmarks/compare_lorenz63.py --quick         # minutes: a smoke run, labelled as such
    python benchmarks/compare_lorenz63.py --rows shplrnn --epochs 1000 --tag shplrnn_e1000  # one row, longer

Data (Hess et al., ICML 2023; never copied into the project): ``lorenz63_on0.05_train.npy``
(100,000 z-scored steps at dt = 0.01 with 5% observation noise) and ``lorenz63_test.npy`` (an
independent clean trajectory), from ``--data-dir`` (default ``../shared/data/gtf_icml2023``).

Runs (every one with the same TrainConfig; sizes give about 350-390 parameters each):

=====================  ==========================================================  ============
row                    model                                                       forcing
=====================  ==========================================================  ============
shPLRNN + aGTF         clipped shPLRNN, M = 3, L = 50, identity observation         adaptive GTF
LEM + aGTF             LEM, H = 9, autonomous, affine readout of y                  adaptive GTF
LSTM + aGTF            LSTM, H = 9, autonomous, affine readout of h                 adaptive GTF
RNN + aGTF             tanh RNN, H = 17, autonomous                                 adaptive GTF
LSTM (input) + TF      LSTM, H = 9, input-fed (reads the last observation)          teacher forcing
=====================  ==========================================================  ============

The last row is the classical way of training an LSTM on a time series: its input is the observed
previous step (teacher forcing), and at test time it feeds back its own predictions.

The table (mean ± standard error (median) over seeds) goes to
``benchmarks/results/compare_lorenz63_<date>[_quick].md`` with the command, date and budget.
"""

from __future__ import annotations

import argparse
import platform
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import provenance  # noqa: E402
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "gtf_icml2023"

MODELS = [
    {"name": "shplrnn", "label": "shPLRNN", "latent_dim": 3, "hidden_dim": 50},
    {"name": "lem", "label": "LEM", "hidden_dim": 9},
    {"name": "lstm", "label": "LSTM", "hidden_dim": 9},
    {"name": "rnn", "label": "RNN", "hidden_dim": 17},
]
LAMBDA_MAX = 0.9056  # Lorenz-63 lambda_max per time unit (literature, SPEC section 1); z-scoring keeps it
INPUT_FED_LSTM = {"name": "lstm", "label": "LSTM (input-fed)", "hidden_dim": 9, "input_fed": True}
ROWS = ["shplrnn", "lem", "lstm", "rnn", "lstm_tf"]


def grids(args) -> list[dict]:
    dataset = {"label": "lorenz63 (GTF paper)", "train": str(args.data_dir / "lorenz63_on0.05_train.npy"),
               "test": str(args.data_dir / "lorenz63_test.npy"), "max_test_steps": args.test_steps, "dt": 0.01,
               "lambda_max": LAMBDA_MAX}
    if args.train_steps:
        dataset["max_train_steps"] = args.train_steps
    budget = {"epochs": args.epochs, "batches_per_epoch": args.batches, "batch_size": 16, "seq_len": 200,
              "lr_start": args.lr_start, "lr_end": args.lr_end}
    evalcfg = {"lyapunov_steps": args.lyapunov_steps, "lyapunov_transient": min(1000, args.lyapunov_steps)}
    common = {"seeds": list(range(args.seeds)), "budget": budget, "eval": evalcfg, "datasets": [dataset]}
    models = [m for m in MODELS if m["name"] in args.rows]
    grids = [dict(common, models=models, forcings=[{"name": "agtf", "label": "aGTF"}])] if models else []
    if "lstm_tf" in args.rows:
        grids.append(dict(common, models=[INPUT_FED_LSTM], forcings=[{"name": "tf", "label": "TF"}]))
    return grids


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=300)
    p.add_argument("--batches", type=int, default=50, help="updates per epoch")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--rows", nargs="+", default=ROWS, choices=ROWS,
                   help="which rows to run (default all; lstm_tf is the input-fed LSTM with teacher forcing)")
    p.add_argument("--tag", default="", help="appended to the result file name")
    p.add_argument("--lr-start", type=float, default=3e-3, help="RAdam learning rate, decayed exponentially ...")
    p.add_argument("--lr-end", type=float, default=1e-5, help="... to this at the last epoch")
    p.add_argument("--test-steps", type=int, default=100_000, help="test points compared (<= 100,000)")
    p.add_argument("--train-steps", type=int, default=None, help="use only the first n training steps")
    p.add_argument("--lyapunov-steps", type=int, default=10_000, help="QR steps of each model's spectrum")
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--executor", default="process", choices=["process", "serial", "ray"])
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "runs" / "compare_lorenz63")
    p.add_argument("--quick", action="store_true",
                   help="3 epochs x 10 updates, 20,000 train / 5,000 test steps, 500 QR steps: a smoke run")
    args = p.parse_args(argv)
    if args.quick:
        args.epochs, args.batches, args.test_steps, args.train_steps = 3, 10, 5000, 20_000
        args.lyapunov_steps = 500
    for name in ("lorenz63_on0.05_train.npy", "lorenz63_test.npy"):
        if not (args.data_dir / name).is_file():
            p.error(f"{args.data_dir / name} not found; give --data-dir, the folder of the GTF paper's files")

    import dsrecon
    from dsrecon.comparison import CompareResult

    t0 = time.perf_counter()
    parts = [dsrecon.compare(g, out_dir=args.out / ("part1" if g["forcings"][0]["name"] == "tf" else "part0"),
                             executor=args.executor, workers=args.workers, figure=(i == 0))
             for i, g in enumerate(grids(args))]
    wall = time.perf_counter() - t0
    merged = CompareResult(rows=[r for part in parts for r in part.rows], runs=[r for part in parts for r in part.runs],
                           title="Lorenz-63 (GTF paper files): equal budgets")
    stamp = datetime.now(timezone.utc)
    label = ("_quick" if args.quick else "") + (f"_{args.tag}" if args.tag else "")
    target = ROOT / "benchmarks" / "results" / f"compare_lorenz63_{stamp:%Y-%m-%d}{label}.md"
    command = "python benchmarks/compare_lorenz63.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    header = [
        "# Benchmark: model comparison on Lorenz-63" + (" -- QUICK SMOKE RUN, NOT A RESULT" if args.quick else ""),
        "",
        f"- command: `{command.strip()}`",
        f"- commit: {provenance.commit()}",
        f"- date: {stamp:%Y-%m-%d %H:%M} UTC; machine: {platform.machine()}, {platform.node()}; "
        f"wall time {wall / 60:.1f} min for {sum(p.n_executed for p in parts)} runs executed "
        f"({sum(p.n_skipped for p in parts)} reused)",
        f"- budget (every run): {args.epochs} epochs x {args.batches} updates, batch 16, seq_len 200, RAdam "
        f"{args.lr_start:g} -> {args.lr_end:g}; training path: TrainConfig backend 'auto' (fused kernel for the "
        "shPLRNN, affine forcing for the others); seeds " + ", ".join(map(str, range(args.seeds))),
        "- data: lorenz63_on0.05_train.npy" + (f" (first {args.train_steps} steps)" if args.train_steps else "")
        + f", test: first {args.test_steps} steps of lorenz63_test.npy",
        f"- evaluation: GTF paper protocol (generate 1.25 T from the first test point, drop 0.25 T); model "
        f"lambda_max from a QR spectrum over {args.lyapunov_steps} steps; |dlambda_max| against the literature "
        f"value {LAMBDA_MAX} per time unit",
        "- noise floor (two independent true trajectories, 100,000 steps, SPEC section 4): D_stsp about "
        "0.13-0.15, D_H about 0.06; shorter test series have higher floors.",
    ]
    if args.quick:
        header.append("- QUICK RUN: a few dozen updates per model; it shows the pipeline works, the numbers "
                      "say nothing about the models.")
    target.write_text("\n".join(header) + "\n\n" + merged.to_markdown())
    print(merged.to_markdown())
    print(f"written: {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
