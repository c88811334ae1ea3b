"""Time per update of one model trained alone: the generic one-member stack (``backend="auto"``,
bit-identical to an ensemble member) against the affine-forcing path (``backend="affine"``).

Whole ``train`` runs of one epoch (20 updates, B = 16, T = 200, GTF alpha = 0.1) on the GTF paper's
Lorenz-63 training file, for the LSTM (H = 9), LEM (H = 9) and ALRNN (M = 20, P = 2), repetitions
interleaved; the median per update is reported.

Usage (repository root, venv active)::

    python benchmarks/single_run_paths.py --out benchmarks/results/single_run_paths_<date>.md
"""

from __future__ import annotations

import argparse
import datetime as _dt
import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import provenance  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from dsrecon.forcing import make_forcing  # noqa: E402
from dsrecon.models import make_model  # noqa: E402
from dsrecon.training import TrainConfig, train  # noqa: E402

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "gtf_icml2023"
FAMILIES = {"lstm": dict(hidden_dim=9), "lem": dict(hidden_dim=9), "alrnn": dict(latent_dim=20, n_relu=2)}
UPDATES = 20


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=3, help="interleaved repetitions (median reported)")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    x = np.load(DATA / "lorenz63_on0.05_train.npy").astype(np.float32)
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    times: dict = {}
    for _ in range(args.reps):
        for family, kw in FAMILIES.items():
            for backend in ("auto", "affine"):
                model = make_model(family, obs_dim=3, seed=0, **kw)
                cfg = TrainConfig(epochs=1, batches_per_epoch=UPDATES, seq_len=200, batch_size=16, seed=0,
                                  backend=backend)
                t0 = time.perf_counter()
                train(model, x, cfg, make_forcing("gtf", alpha=0.1), progress=False)
                times.setdefault((family, backend), []).append((time.perf_counter() - t0) / UPDATES)
    lines = [f"# One model trained alone: generic one-member stack vs affine-forcing path ({_dt.date.today()})", "",
             f"Command: `python benchmarks/single_run_paths.py {' '.join(argv if argv is not None else sys.argv[1:])}`  ",
             f"Commit: {provenance.commit()}  ",
             f"Median ms per update over {args.reps} interleaved whole runs of {UPDATES} updates "
             "(B = 16, T = 200, one torch thread).", "",
             "| family | auto (one-member stack) | affine | ratio |", "|---|---|---|---|"]
    for family in FAMILIES:
        a, f = (1e3 * statistics.median(times[(family, b)]) for b in ("auto", "affine"))
        lines.append(f"| {family} | {a:.1f} ms | {f:.1f} ms | {a / f:.2f}x |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
