"""Benchmark: how long a fitted shPLRNN forecasts Lorenz-63 correctly, beside two simple baselines.

A clipped shPLRNN is fitted with ``dsrecon.fit`` and its defaults (the README's ``dsrecon fit``:
M = 10, L = 50, GTF alpha = 0.1, 600 epochs, learning rate 3e-3 -> 1e-5) on the GTF paper's noisy
Lorenz-63 training file (5 % observation noise, 100,000 x 3, dt = 0.01), with the paper's clean
test file as its held-out data. On the test file, from ``--windows`` (100) context windows spread
evenly over it, each model forecasts ``--horizon`` steps after a context of ``--context`` steps:

* **shPLRNN**: ``Reconstruction.forecast`` (latent state inferred by teacher forcing with the
  context, then a free run);
* **linear AR(p)**: ``x_{t+1} = c + sum_{k<p} A_k x_{t-k}``, least squares on the training file,
  iterated; the order p in {1, 2, 3, 5, 10, 20, 50, 100} is chosen by the median valid time on context
  windows from the last fifth of the *training* file (never the test file);
* **persistence**: ``x_{t+j} = x_t``.

Valid prediction time (Pathak et al., PRL 2018; Vlachas et al., Neural Networks 2020): with the
normalized error ``e(t) = sqrt(mean_i (x_pred_i(t) - x_true_i(t))^2 / sigma_i^2)``, sigma_i the std
of channel i over the test file, the VPT is the time until ``e`` first exceeds 0.3, in Lyapunov
times ``lambda_max t`` with ``lambda_max = 0.906`` per time unit for Lorenz-63 (SPEC section 1:
0.9056) and ``t = steps x dt``. A window whose error stays below 0.3 over the whole horizon counts
as the horizon (censored; the table says how many). The table gives the median over the windows
with its interquartile range.

Usage (from the project root)::

    python benchmarks/forecast_lorenz63.py                      # fit (a few minutes), then forecast
    python benchmarks/forecast_lorenz63.py --reconstruction runs/fc/reconstruction.pt   # reuse a fit
    python benchmarks/forecast_lorenz63.py --epochs 100         # a shorter fit (say so with the figures)

Results go to ``benchmarks/results/forecast_lorenz63_<date>.md`` with the command, date and commit.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import provenance  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "gtf_icml2023"
DT = 0.01  # sampling interval of the paper's Lorenz-63 files (their README)
LAMBDA_MAX = 0.906  # per time unit (SPEC section 1: 0.9056)
THRESHOLD = 0.3
AR_ORDERS = (1, 2, 3, 5, 10, 20, 50, 100)


def valid_steps(pred: np.ndarray, true: np.ndarray, sigma: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Steps until the normalized error first exceeds ``THRESHOLD``, per window.

    ``pred``, ``true``: ``(W, H, N)``; ``sigma``: ``(N,)``. Returns ``(steps (W,), censored (W,))``:
    ``steps = j`` when the prediction j + 1 steps ahead (index j) is the first beyond the threshold,
    i.e. j steps were valid; ``H`` and censored = True when none is.
    """
    err = np.sqrt(np.mean(((pred - true) / sigma) ** 2, axis=-1))  # (W, H)
    bad = err > THRESHOLD
    bad |= ~np.isfinite(err)
    first = np.where(bad.any(axis=1), bad.argmax(axis=1), pred.shape[1])  # (W,)
    return first, ~bad.any(axis=1)


def fit_ar(x: np.ndarray, p: int) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares AR(p): ``x_{t+1} = c + sum_k A_k x_{t-k}``; returns ``(W (p N, N), c (N,))`` with the
    lag vector ordered newest first."""
    T, N = x.shape
    lags = np.concatenate([x[p - 1 - k:T - 1 - k] for k in range(p)], axis=1)  # (T - p, p N), newest first
    design = np.concatenate([lags, np.ones((T - p, 1))], axis=1)
    coef, *_ = np.linalg.lstsq(design, x[p:], rcond=None)  # (p N + 1, N)
    return coef[:-1], coef[-1]


def forecast_ar(W: np.ndarray, c: np.ndarray, context: np.ndarray, horizon: int) -> np.ndarray:
    """Iterate the AR model from the last p samples of each context ``(B, T, N)`` -> ``(B, H, N)``."""
    N = context.shape[-1]
    p = W.shape[0] // N
    hist = [context[:, -1 - k] for k in range(p)]  # newest first, each (B, N)
    out = []
    for _ in range(horizon):
        nxt = np.concatenate(hist, axis=1) @ W + c  # (B, N)
        out.append(nxt)
        hist = [nxt] + hist[:-1]
    return np.stack(out, axis=1)


def windows(x: np.ndarray, n: int, context: int, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` (context, future) pairs with starts spread evenly over ``x``: ``(n, context, N)``, ``(n, horizon, N)``."""
    starts = np.linspace(0, len(x) - context - horizon, n).round().astype(int)
    ctx = np.stack([x[s:s + context] for s in starts])
    fut = np.stack([x[s + context:s + context + horizon] for s in starts])
    return ctx, fut


def summarize(steps: np.ndarray, censored: np.ndarray) -> dict:
    lt = steps * DT * LAMBDA_MAX  # Lyapunov times
    q1, med, q3 = np.percentile(lt, [25, 50, 75])
    return {"median": med, "q1": q1, "q3": q3, "mean": lt.mean(), "censored": int(censored.sum())}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reconstruction", help="reuse a saved reconstruction (.pt or a run folder) instead of fitting")
    p.add_argument("--epochs", type=int, default=None, help="fit epochs (default: dsrecon.fit's, 600)")
    p.add_argument("--run-dir", help="where the fit's run folder goes (default: none written but the "
                                     "reconstruction, under /tmp)")
    p.add_argument("--windows", type=int, default=100)
    p.add_argument("--context", type=int, default=200, help="context length in steps (default 200 = 2 time units)")
    p.add_argument("--horizon", type=int, default=1500, help="forecast steps (default 1500 = 13.6 Lyapunov times)")
    p.add_argument("--out", help="results file (default benchmarks/results/forecast_lorenz63_<date>.md)")
    args = p.parse_args(argv)
    import dsrecon

    train_path, test_path = DATA / "lorenz63_on0.05_train.npy", DATA / "lorenz63_test.npy"
    if not (train_path.is_file() and test_path.is_file()):
        print(f"data files not found under {DATA}; see the README there")
        return 1
    torch.set_num_threads(1)
    train_x, test_x = np.load(train_path).astype(np.float64), np.load(test_path).astype(np.float64)
    lines, t_start, cpu_start = [], time.perf_counter(), time.process_time()

    def say(text=""):
        print(text, flush=True)
        lines.append(text)

    # ---- the shPLRNN: fit or reuse
    fit_note = ""
    if args.reconstruction:
        rec = dsrecon.load_reconstruction(args.reconstruction)
        fit_note = f"reused reconstruction {args.reconstruction} (not refitted in this run)"
        fit_s = float("nan")
    else:
        kw = {} if args.epochs is None else {"epochs": args.epochs}
        run_dir = Path(args.run_dir) if args.run_dir else None
        t0, c0 = time.perf_counter(), time.process_time()
        rec = dsrecon.fit(str(train_path), test=str(test_path), dt=DT, run_dir=run_dir, progress=False, **kw)
        fit_s, fit_cpu = time.perf_counter() - t0, time.process_time() - c0
        if run_dir is None:
            rec.save(Path("/tmp") / f"forecast_lorenz63_{os.getpid()}.pt")
        fit_note = f"fitted in this run in {fit_s:.0f} s wall, {fit_cpu:.0f} s CPU (`dsrecon.fit` defaults" + (
            f", epochs = {args.epochs})" if args.epochs is not None else ")")
    train_s = rec.history[-1].get("time_s", float("nan")) if rec.history else float("nan")
    fit_note += f"; its training took {train_s:.0f} s wall (its history)"
    test_report = rec.reports.get("test") or {}
    settings = rec.settings

    # ---- windows on the test file; sigma per channel of the test file
    sigma = test_x.std(axis=0)
    ctx, fut = windows(test_x, args.windows, args.context, args.horizon)

    t0 = time.perf_counter()
    pred = rec.forecast(ctx, args.horizon).numpy()  # (W, H, N)
    t_model = time.perf_counter() - t0
    results = {"shPLRNN (dsrecon.fit)": summarize(*valid_steps(pred, fut, sigma))}

    # ---- AR(p): order by validation windows from the last fifth of the training file
    split = int(0.8 * len(train_x))
    vctx, vfut = windows(train_x[split:], args.windows, args.context, args.horizon)
    vsigma = train_x[split:].std(axis=0)
    val = {}
    for order in AR_ORDERS:
        W, c = fit_ar(train_x[:split], order)
        val[order] = np.median(valid_steps(forecast_ar(W, c, vctx, args.horizon), vfut, vsigma)[0])
    best = max(AR_ORDERS, key=lambda o: (val[o], -o))
    W, c = fit_ar(train_x, best)  # refit on the whole training file
    results[f"linear AR({best}), least squares"] = summarize(*valid_steps(forecast_ar(W, c, ctx, args.horizon), fut,
                                                                          sigma))
    persist = np.repeat(ctx[:, -1:], args.horizon, axis=1)
    results["persistence"] = summarize(*valid_steps(persist, fut, sigma))

    # ---- report
    date = _dt.date.today().isoformat()
    say(f"# Forecast on the GTF paper's Lorenz-63 test file ({date})")
    say()
    say(f"Command: `python {' '.join(['benchmarks/forecast_lorenz63.py', *sys.argv[1:]])}`  ")
    say(f"Commit: {provenance.commit()}; torch {torch.__version__}, {os.cpu_count()} CPUs, "
        f"load average at start {os.getloadavg()[0]:.1f}  ")
    say(f"Model: {rec!r}; {fit_note}. Forcing {settings.get('forcing')}, "
        f"{settings.get('train', {}).get('epochs')} epochs, lr {settings.get('train', {}).get('lr_start')} -> "
        f"{settings.get('train', {}).get('lr_end')}. Its test scores (paper protocol, full test file): "
        f"D_stsp {test_report.get('d_stsp', float('nan')):.3f}, D_H {test_report.get('d_h', float('nan')):.3f}, "
        f"PE(20) {test_report.get('pe', float('nan')):.4f}.")
    say()
    say(f"{args.windows} context windows of {args.context} steps, starts evenly spread over the test file "
        f"({len(test_x)} steps); horizon {args.horizon} steps = {args.horizon * DT * LAMBDA_MAX:.1f} Lyapunov times. "
        f"Valid prediction time: until sqrt(mean_i ((x_pred_i - x_i) / sigma_i)^2) > {THRESHOLD}, sigma_i the "
        f"test file's std per channel, in Lyapunov times (lambda_max = {LAMBDA_MAX} per time unit, dt = {DT}, "
        f"one Lyapunov time = {1 / (LAMBDA_MAX * DT):.0f} steps).")
    say()
    say("| forecaster | median VPT (Lyapunov times) | IQR | mean | windows valid to the horizon |")
    say("|---|---|---|---|---|")
    for name, r in results.items():
        say(f"| {name} | {r['median']:.2f} | {r['q1']:.2f} - {r['q3']:.2f} | {r['mean']:.2f} | "
            f"{r['censored']} / {args.windows} |")
    say()
    say(f"AR order chosen on {args.windows} windows from the last 20 % of the training file (median VPT in steps: "
        + ", ".join(f"p={o}: {val[o]:.0f}" for o in AR_ORDERS) + "); refitted on the whole training file.")
    say(f"Times: shPLRNN forecasts of all windows {t_model:.1f} s; whole benchmark "
        f"{time.perf_counter() - t_start:.0f} s wall, {time.process_time() - cpu_start:.0f} s CPU"
        + (f" (fit {fit_s:.0f} s)" if fit_s == fit_s else "") + ".")
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / f"forecast_lorenz63_{date}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
