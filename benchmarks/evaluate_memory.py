"""Peak memory of ``dsrecon.evaluate`` on a 2,000,000 x 3 test series (target: at most 1.5 GB).

A clipped shPLRNN (M = 10, L = 50) is trained briefly on the GTF paper's Lorenz-63 training file
(enough for a non-constant, finite orbit, so that D_stsp and D_H are computed, not skipped) and
saved; then a fresh process loads it, builds the test series (the paper's 100,000-step Lorenz-63
test file tiled 20 times, float32) and runs ``evaluate`` with the default ``EvalConfig``. Memory is
the process's peak resident set size (``resource.getrusage(RUSAGE_SELF).ru_maxrss``), which sees
NumPy and torch allocations alike; the baseline is the peak before ``evaluate`` (interpreter,
torch, model and test data). ``--reference`` also measures D_H alone with the all-at-once formula
that ``dsrecon.metrics`` used before it worked one dimension at a time (float64 copy of the whole
series, conv1d smoothing), on the same data, for comparison.

Usage::

    python benchmarks/evaluate_memory.py [--steps 2000000] [--reference] [--md benchmarks/results/evaluate_memory_DATE.md]

The data files are read by path from ../shared/data/gtf_icml2023 (``--data-dir``), never copied.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "gtf_icml2023"

# runs in a fresh interpreter: {ckpt}, {data}, {steps}, {mode} are filled in
CHILD = """
import json, resource, time
import numpy as np, torch
torch.set_num_threads(1)
import dsrecon
from dsrecon.metrics import hellinger_distance

def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

test = np.load({data!r})  # (100000, 3) float32
x = np.tile(test, ({steps} // len(test) + 1, 1))[:{steps}]  # (steps, 3)
model, _ = dsrecon.load_checkpoint({ckpt!r})
out = {{"data_mb": x.nbytes / 2**20}}
if {mode!r} == "evaluate":
    dsrecon.evaluate(model, x[:2000], dsrecon.EvalConfig(lyapunov_steps=100))  # warm up (FFT plans, kernels)
    out["baseline_mb"] = peak_mb()
    t0 = time.perf_counter()
    report = dsrecon.evaluate(model, dsrecon.Trajectory(x, dt=0.01, name="lorenz63-tiled"))
    out.update(seconds=time.perf_counter() - t0, d_stsp=report.d_stsp, d_h=report.d_h, pe=report.pe)
else:  # D_H alone, on the model's generated series
    x_gen = dsrecon.generate(model, x[0], len(x)).numpy()
    ref = {reference!r}
    namespace = {{}}
    exec(ref, namespace)
    fn = namespace["reference_dh"] if {mode!r} == "reference_dh" else hellinger_distance
    fn(x[:2000], x_gen[:2000])
    out["baseline_mb"] = peak_mb()
    t0 = time.perf_counter()
    out.update(d_h=fn(x, x_gen), seconds=time.perf_counter() - t0)
out["peak_mb"] = peak_mb()
print("RESULT", json.dumps(out))
"""

# the all-at-once D_H that the column-by-column implementation replaced (for --reference only)
REFERENCE_DH = textwrap.dedent('''
    import numpy as np, torch

    def reference_dh(x_true, x_gen, sigma=20):
        def spectrum(x):
            x = torch.as_tensor(np.asarray(x, dtype=np.float64))
            z = (x - x.mean(dim=0)) / x.std(dim=0, unbiased=False)
            p = torch.fft.rfft(z, dim=0).abs() ** 2
            radius = int(4 * sigma + 0.5)
            k = torch.arange(-radius, radius + 1, dtype=torch.float64)
            w = torch.exp(-0.5 * (k / sigma) ** 2)
            w = w / w.sum()
            padded = torch.cat([p[:radius].flip(0), p, p[-radius:].flip(0)], dim=0)
            p = torch.nn.functional.conv1d(padded.T.unsqueeze(1), w.view(1, 1, -1)).squeeze(1).T.clamp_(min=0)
            return p / p.sum(dim=0, keepdim=True)
        bc = torch.sqrt(spectrum(x_true) * spectrum(x_gen)).sum(dim=0)
        return float(torch.sqrt((1 - bc).clamp(min=0)).mean())
''')


def train_model(data_dir: Path, path: Path) -> None:
    """A briefly trained shPLRNN whose free-running orbit is non-constant and finite."""
    import numpy as np
    import torch

    import dsrecon

    torch.set_num_threads(1)
    x = np.load(data_dir / "lorenz63_on0.05_train.npy")[:20_000]  # (T, 3)
    model = dsrecon.make_model("shplrnn", obs_dim=3, latent_dim=10, hidden_dim=50, seed=0)
    dsrecon.train(model, x, dsrecon.TrainConfig(epochs=40, lr_start=3e-3, lr_end=1e-4), dsrecon.GTF(0.1),
                  progress=False)
    dsrecon.save_checkpoint(path, model)


def child(ckpt: Path, data: Path, steps: int, mode: str) -> dict:
    code = CHILD.format(ckpt=str(ckpt), data=str(data), steps=steps, mode=mode, reference=REFERENCE_DH)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} run failed:\n{proc.stderr[-3000:]}")
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2_000_000, help="test steps T (default 2000000)")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--reference", action="store_true",
                        help="also measure D_H alone, new and all-at-once formula (the latter needs ~4.5 GB)")
    parser.add_argument("--md", type=Path, help="write a Markdown report here")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "model.pt"
        t0 = time.perf_counter()
        train_model(args.data_dir, ckpt)
        train_s = time.perf_counter() - t0
        data = args.data_dir / "lorenz63_test.npy"
        results = {"evaluate": child(ckpt, data, args.steps, "evaluate")}
        if args.reference:
            results["D_H alone"] = child(ckpt, data, args.steps, "dh")
            results["D_H alone, all-at-once formula"] = child(ckpt, data, args.steps, "reference_dh")

    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    import torch

    lines = [f"# evaluate memory, {args.steps:,} x 3", "",
             f"- command: `python benchmarks/evaluate_memory.py {' '.join(argv if argv is not None else sys.argv[1:])}`",
             f"- date (UTC): {_dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d %H:%M')}",
             f"- commit: {commit}{' (with uncommitted changes)' if dirty else ''}",
             f"- machine: {platform.node()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
             f"torch {torch.__version__}, 1 torch thread",
             f"- model: shPLRNN M = 10, L = 50, trained {train_s:.0f} s (40 epochs) on lorenz63_on0.05_train.npy[:20000]",
             f"- test data: lorenz63_test.npy tiled to {args.steps:,} x 3 float32 "
             f"({results['evaluate']['data_mb']:.0f} MB)", "",
             "Peak RSS is the process maximum (ru_maxrss); the baseline is that maximum just before the "
             "measured call (interpreter, torch, model, data, a warm-up call on 2,000 steps).", "",
             "| measured call | peak RSS [MB] | baseline [MB] | growth [MB] | time [s] | D_H | D_stsp |",
             "|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['peak_mb']:.0f} | {r['baseline_mb']:.0f} | {r['peak_mb'] - r['baseline_mb']:.0f} "
                     f"| {r['seconds']:.1f} | {r['d_h']:.6g} | {r.get('d_stsp', float('nan')):.4g} |")
    peak = results["evaluate"]["peak_mb"]
    lines += ["", f"Target: evaluate's peak at most 1,536 MB (1.5 GB): {'met' if peak <= 1536 else 'NOT met'} "
              f"({peak:.0f} MB)."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.md:
        args.md.parent.mkdir(parents=True, exist_ok=True)
        args.md.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
