"""Speed and memory of the evaluation metrics on 100,000 x 3 Lorenz-63 trajectories.

Times D_stsp (binning; GMM for reference), D_H, PE(20) and the model Lyapunov spectrum on the GTF
paper's Lorenz-63 files, and dsrecon's Rosenstein lambda_max against nolds ``lyap_r(fit="poly")``
on the same 10,000-point series (both results printed, with the speed ratio). Peak memory is the
peak resident set size above the baseline, sampled every 2 ms by a thread (it sees NumPy and torch
allocations alike), plus ``torch.cuda.max_memory_allocated`` on a GPU.

Usage::

    python benchmarks/metrics_speed.py [--device cuda] [--threads 1] [--md benchmarks/results/metrics_speed_DATE.md]

The data files are read by path from ../shared/data/gtf_icml2023 (``--data-dir``), never copied.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import provenance  # noqa: E402
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "gtf_icml2023"


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def measure(fn, device: str, repeat: int = 1):
    """(result, best wall seconds, best CPU seconds of ``repeat`` runs, peak RSS above baseline in MB,
    peak CUDA MB). CPU time (this process, all threads) is the robust number on a shared machine."""
    best, best_cpu, result = float("inf"), float("inf"), None
    peak_rss = 0.0
    for _ in range(repeat):
        base = _rss_mb()
        peak = [base]
        done = threading.Event()

        def sample():
            while not done.is_set():
                peak[0] = max(peak[0], _rss_mb())
                time.sleep(0.002)

        sampler = threading.Thread(target=sample, daemon=True)
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        sampler.start()
        t0, c0 = time.perf_counter(), time.process_time()
        result = fn()
        if device == "cuda":
            torch.cuda.synchronize()
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
        done.set()
        sampler.join()
        best, best_cpu = min(best, elapsed), min(best_cpu, cpu)
        peak_rss = max(peak_rss, max(peak[0], _rss_mb()) - base)
    cuda_mb = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None
    return result, best, best_cpu, peak_rss, cuda_mb


def machine() -> str:
    cpu = platform.processor() or "cpu"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{cpu}, {os.cpu_count()} logical cores, {gpu}; Python {platform.python_version()}, "
            f"torch {torch.__version__}, numpy {np.__version__}; torch threads {torch.get_num_threads()}; "
            f"1-min load average at start {load:.1f}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--rosenstein-points", type=int, default=10_000)
    parser.add_argument("--skip-nolds", action="store_true", help="do not run nolds (it takes ~10 s and ~2 GB)")
    parser.add_argument("--md", type=Path, help="also write the table to this Markdown file")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here")
    dev = torch.device(args.device)

    from dsrecon.lyapunov import lyapunov_spectrum
    from dsrecon.metrics import hellinger_distance, prediction_error, state_space_divergence
    from dsrecon.models import make_model
    from dsrecon.rosenstein import rosenstein_lambda_max

    test_np = np.load(args.data_dir / "lorenz63_test.npy").astype(np.float64)  # (100000, 3)
    train_np = np.load(args.data_dir / "lorenz63_on0.05_train.npy").astype(np.float64)
    test, train = torch.as_tensor(test_np, device=dev), torch.as_tensor(train_np, device=dev)
    model = make_model("shplrnn", obs_dim=3, latent_dim=3, hidden_dim=50, seed=0).to(dev)

    rows = []

    def add(name, fn, value_fmt="{:.4f}", repeat=3, note=""):
        value, sec, cpu, rss, cuda = measure(fn, args.device, repeat)
        rows.append((name, value_fmt.format(value) if value is not None else "", sec, cpu, rss, cuda, note))
        print(f"{name:<44} {rows[-1][1]:>10} {sec:8.3f} s wall {cpu:8.3f} s CPU  peak +{rss:7.1f} MB RSS"
              + (f", {cuda:7.1f} MB CUDA" if cuda is not None else "") + (f"  ({note})" if note else ""), flush=True)
        return value

    print(f"machine: {machine()}\n")
    add("D_stsp bins (30^3), train vs test, 100k x 3", lambda: state_space_divergence(test, train))
    add("D_stsp GMM (10k centres, 1k samples), 3-d", lambda: state_space_divergence(test, train, method="gmm"), repeat=1)
    add("D_H (sigma 20), train vs test, 100k x 3", lambda: hellinger_distance(test, train))
    add("PE(20), shPLRNN M=3 L=50, 99,980 starts", lambda: prediction_error(model, test.float(), n=20),
        value_fmt="{:.4g}", repeat=1)
    add("Lyapunov spectrum QR, shPLRNN, 8 x 10,000 steps",
        lambda: lyapunov_spectrum(model, test[:: 12_500].float(), n_steps=10_000, transient=1000).exponents[0],
        value_fmt="{:.5f}", repeat=1, note="lambda_1 per step")

    x = test_np[: args.rosenstein_points, 0]
    settings = {
        "lyap_r nolds defaults (emb 10, auto lag/min_tsep, traj 20)": dict(emb_dim=10, trajectory_len=20),
        "lyap_r Lorenz (emb 5, traj 250, fit from 50)": dict(emb_dim=5, trajectory_len=250, fit_offset=50),
    }
    ratios = []
    for label, kw in settings.items():
        ours = add(f"Rosenstein dsrecon, {len(x)} pts: {label}",
                   lambda kw=kw: rosenstein_lambda_max(torch.as_tensor(x, device=dev), **kw, tau=0.01),
                   note="per time unit")
        ours_sec, ours_cpu = rows[-1][2], rows[-1][3]
        if args.skip_nolds:
            continue
        from dsrecon._nolds import import_nolds

        nolds = import_nolds()
        ref = add(f"Rosenstein nolds lyap_r(poly), {len(x)} pts: {label}",
                  lambda kw=kw: nolds.lyap_r(x, **kw, fit="poly", tau=0.01), repeat=1, note="per time unit")
        ratios.append((label, ours, ref, rows[-1][2] / ours_sec, rows[-1][3] / ours_cpu))
    for label, ours, ref, ratio, ratio_cpu in ratios:
        print(f"speed-up over nolds ({label}): {ratio:.1f}x wall, {ratio_cpu:.1f}x CPU time; results "
              f"{ours:.10f} vs {ref:.10f} (relative difference {abs(ours - ref) / abs(ref):.1e})")

    if args.md:
        args.md.parent.mkdir(parents=True, exist_ok=True)
        cmd = "python benchmarks/metrics_speed.py " + " ".join(argv if argv is not None else sys.argv[1:])
        lines = [
            f"# metrics_speed ({_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M} UTC)", "",
            f"Command: `{cmd.strip()}` (commit {provenance.commit()})", "",
            f"Machine: {machine()}", "",
            "| what | result | wall (s) | CPU (s) | peak RSS above baseline (MB) | peak CUDA (MB) |",
            "|---|---|---|---|---|---|",
        ]
        for name, value, sec, cpu, rss, cuda, note in rows:
            value = f"{value} {note}".strip()
            lines.append(f"| {name} | {value} | {sec:.3f} | {cpu:.3f} | {rss:.1f} | "
                         f"{'' if cuda is None else f'{cuda:.1f}'} |")
        lines.append("")
        for label, ours, ref, ratio, ratio_cpu in ratios:
            lines.append(f"- Rosenstein, {label}: dsrecon {ours:.10f}, nolds {ref:.10f} (relative difference "
                         f"{abs(ours - ref) / abs(ref):.1e}); dsrecon is {ratio:.1f}x faster in wall time, "
                         f"{ratio_cpu:.1f}x in CPU time.")
        args.md.write_text("\n".join(lines) + "\n")
        print(f"wrote {args.md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
