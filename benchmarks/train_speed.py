"""Training speed of the shPLRNN: plain autograd loop vs the fused paths, and K-model ensembles.

Usage (from the repository root, venv active)::

    python benchmarks/train_speed.py                    # per-update timings, ensembles, loops, settings (~4 min)
    python benchmarks/train_speed.py --sections 6 7     # only the whole-loop and other-model sections
    python benchmarks/train_speed.py --compile          # also the plain loop with a torch.compile'd step
    python benchmarks/train_speed.py --to-target        # + wall time to D_stsp <= 0.30 on the GTF paper's Lorenz-63
    python benchmarks/train_speed.py --out benchmarks/results/train_speed_<date>.md

Every path runs one full training update (zero_grad, forced rollout, loss, backward, RAdam step:
``dsrecon.fast.radam.FusedRAdam``, the optimizer ``train()`` uses) on the issue's configuration: clipped shPLRNN, M = 3, L = 50, batch 16, windows of T = 200 steps,
GTF with alpha = 0.1. Paths are timed in the same process with interleaved repetitions and the
median is reported, so a neighbour's load on the CPU hits all paths alike: the ratios in one run
are what counts, absolute milliseconds move with the machine's load.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import provenance  # noqa: E402

import numpy as np
import torch

from dsrecon.ensemble import Ensemble
from dsrecon.fast import EnsembleShPLRNN, ensemble_loss_and_grads, loss_and_grads as fused_step
from dsrecon.fast._kernels import c_library
from dsrecon.fast.radam import FusedRAdam
from dsrecon.forcing import make_forcing
from dsrecon.models.plrnn import ShPLRNN
from dsrecon.training import TrainConfig, loss_and_grads as plain_step, train

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "gtf_icml2023"
TORCH_DEFAULT_THREADS = torch.get_num_threads()  # before main() sets 1 for the per-update sections
M, L, N, B, T = 3, 50, 3, 16, 200
LINES: list[str] = []


def say(line: str = "") -> None:
    print(line, flush=True)
    LINES.append(line)


def _update_fn(step, model, x, alphas, **kw):
    opt = FusedRAdam(model.parameters(), lr=1e-3)  # as train()

    def update():
        opt.zero_grad(set_to_none=True)
        step(model, x, alphas, 1e-5, **kw)
        opt.step()
    return update


def _compiled_update(model, x, alphas):
    """The plain loop with ``model.step`` compiled by torch.compile (inductor, C++ on the CPU).

    Compiling the whole 200-step window instead (one graph of ~2000 nodes) did not finish within
    15 minutes on this machine, so only the step is compiled; each of its 200 calls per update
    then pays the compiled function's guard and dispatch cost.
    """
    model.step = torch.compile(model.step)
    return _update_fn(plain_step, model, x, alphas)


def time_interleaved(fns: dict, reps: int, inner: int) -> tuple[dict, dict]:
    """Median wall and CPU seconds per call of each function, repetitions interleaved across them.

    CPU time (``time.process_time``) counts only this process's turns on a core, so it is the
    steadier number while other processes load the machine; wall time is what a user waits.
    """
    for f in fns.values():
        f()  # warm-up (and kernel build)
    wall, cpu = {k: [] for k in fns}, {k: [] for k in fns}
    for _ in range(reps):
        for k, f in fns.items():
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(inner):
                f()
            wall[k].append((time.perf_counter() - t0) / inner)
            cpu[k].append((time.process_time() - c0) / inner)
    return ({k: statistics.median(v) for k, v in wall.items()}, {k: statistics.median(v) for k, v in cpu.items()})


def bench_paths(args) -> dict:
    say("## 1. One training update, single model")
    say()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(B, T + 1, N, generator=gen)
    alphas = make_forcing("gtf", alpha=0.1).alphas(T + 1)
    fns = {"plain (autograd loop)": _update_fn(plain_step, ShPLRNN(N, M, L, seed=0), x, alphas)}
    try:
        c_library()
        fns["fused, C kernel"] = _update_fn(fused_step, ShPLRNN(N, M, L, seed=0), x, alphas)
    except RuntimeError as err:
        say(f"(C kernel unavailable: {err})")
    if args.compile:
        t0 = time.perf_counter()
        try:
            upd = _compiled_update(ShPLRNN(N, M, L, seed=0), x, alphas)
            upd()
            fns["plain loop, torch.compile'd step"] = upd
            say(f"torch.compile build time of the step: {time.perf_counter() - t0:.1f} s")
            say()
        except Exception as err:  # report, do not hide: compile support varies by platform
            say(f"torch.compile failed after {time.perf_counter() - t0:.1f} s: {type(err).__name__}: {err}")
    res, cpu = time_interleaved(fns, args.reps, args.inner)
    base, cbase = res["plain (autograd loop)"], cpu["plain (autograd loop)"]
    say("| path | wall ms / update | updates / s | speed-up vs plain (wall) | CPU ms / update | speed-up (CPU) |")
    say("|---|---:|---:|---:|---:|---:|")
    for k, s in res.items():
        say(f"| {k} | {s * 1e3:.2f} | {1 / s:.0f} | {base / s:.1f}x | {cpu[k] * 1e3:.2f} | {cbase / cpu[k]:.1f}x |")
    say()
    return res, cpu


def bench_ensembles(args, single: dict) -> None:
    say("## 2. Ensembles: K models (same shapes, different seeds) in one batched update")
    say()
    gen = torch.Generator().manual_seed(1)
    fns = {}
    for K in args.K:
        ens = EnsembleShPLRNN([ShPLRNN(N, M, L, seed=k) for k in range(K)])
        opt = FusedRAdam(ens.parameters(), lr=1e-3)  # as train() of an Ensemble
        x = torch.randn(K, B, T + 1, N, generator=gen)
        alphas = torch.full((K, T + 1), 0.1)

        def update(ens=ens, opt=opt, x=x, alphas=alphas):
            opt.zero_grad(set_to_none=True)
            ensemble_loss_and_grads(ens, x, alphas, 1e-5)
            opt.step()
        fns[K] = update
    wall, cpu = time_interleaved(fns, args.reps, max(1, args.inner // 2))
    single_wall, single_cpu = single
    plain = single_cpu["plain (autograd loop)"]
    fused = min(v for k, v in single_cpu.items() if k.startswith("fused"))
    say("| K | wall ms / update (all K) | CPU ms / update (all K) | model-updates / CPU s | vs K=1 ensemble | "
        "vs single fused | vs single plain |")
    say("|---:|---:|---:|---:|---:|---:|---:|")
    k0 = args.K[0]
    for K in args.K:
        thr = K / cpu[K]
        say(f"| {K} | {wall[K] * 1e3:.2f} | {cpu[K] * 1e3:.2f} | {thr:.0f} | {thr * cpu[k0] / k0:.1f}x | "
            f"{thr * fused:.1f}x | {thr * plain:.1f}x |")
    say()
    say("Throughput = K / (CPU time of one ensemble update); ratios against the single-model paths of "
        "section 1 (CPU time, same run). The issue's target: K/2 times the single-model throughput at K = 10.")
    say()


def bench_threads(args) -> None:
    say("## 3. Threads (torch intra-op threads; the C kernel runs one model on one thread)")
    say()
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(B, T + 1, N, generator=gen)
    alphas = torch.full((T + 1,), 0.1)
    rows = []
    for n in (1, 2):
        torch.set_num_threads(n)
        res, cpu = time_interleaved({"plain": _update_fn(plain_step, ShPLRNN(N, M, L), x, alphas),
                                     "fused": _update_fn(fused_step, ShPLRNN(N, M, L), x, alphas)},
                                    max(3, args.reps // 2), args.inner)
        rows.append((n, res, cpu))
    torch.set_num_threads(1)
    say("| threads | plain wall ms / update | plain CPU ms | fused wall ms / update | fused CPU ms |")
    say("|---:|---:|---:|---:|---:|")
    for n, res, cpu in rows:
        say(f"| {n} | {res['plain'] * 1e3:.2f} | {cpu['plain'] * 1e3:.2f} | {res['fused'] * 1e3:.2f} | "
            f"{cpu['fused'] * 1e3:.2f} |")
    say()


def bench_denormals(args) -> None:
    say("## 4. Denormals: rollouts whose state lives in the subnormal float range")
    say()
    model = ShPLRNN(N, M, L, seed=0)
    with torch.no_grad():
        model.A.fill_(0.999)  # slow decay: from 1e-39 the state stays subnormal for ~10^4 steps
        model.W1.zero_()
        model.h1.zero_()
    n_steps = 2000

    def eager(scale):
        z = torch.full((B, M), scale)
        with torch.no_grad():
            for _ in range(n_steps):
                z = model.step(z)

    x_small = torch.full((B, T + 1, N), 1e-39)
    x_normal = torch.ones(B, T + 1, N)

    def fused(x):
        with torch.no_grad():
            fused_forced_rollout_(model, x)

    reps = max(3, args.reps // 2)
    out = {}
    for flush in (False, True):
        torch.set_flush_denormal(flush)
        for name, fn in (("eager subnormal", lambda: eager(1e-39)), ("eager normal", lambda: eager(1.0)),
                         ("fused subnormal", lambda: fused(x_small)), ("fused normal", lambda: fused(x_normal))):
            fn()
            out[(name, flush)] = statistics.median([_timed(fn) for _ in range(reps)])
    a_small, a_normal, w = torch.full((10 ** 6,), 1e-39), torch.ones(10 ** 6), torch.full((10 ** 6,), 0.999)
    for flush in (False, True):
        torch.set_flush_denormal(flush)
        for name, a in (("elementwise x * 0.999, 10^6 subnormal x", a_small), ("elementwise x * 0.999, 10^6 normal x", a_normal)):
            (a * w)
            out[(name, flush)] = statistics.median([_timed(lambda a=a: a * w) for _ in range(reps)])
    torch.set_flush_denormal(False)
    say("| computation | flush off, CPU ms | torch.set_flush_denormal(True), CPU ms |")
    say("|---|---:|---:|")
    for name in ("elementwise x * 0.999, 10^6 subnormal x", "elementwise x * 0.999, 10^6 normal x",
                 "eager subnormal", "eager normal", "fused subnormal", "fused normal"):
        say(f"| {name} | {out[(name, False)] * 1e3:.1f} | {out[(name, True)] * 1e3:.1f} |")
    say()
    say(f"Eager: {n_steps} steps of model.step (B = {B}) with A = 0.999, W1 = 0 from z = 1e-39 or 1; fused: the C kernel's forward over T = {T} "
        "(alpha = 0), which sets FTZ/DAZ itself for the duration of the call. train() and "
        "an ensemble's train() turn torch.set_flush_denormal on for the run and off after it.")
    say()


def fused_forced_rollout_(model, x):
    from dsrecon.fast import fused_forced_rollout

    return fused_forced_rollout(model, x, 0.0)


def _timed(fn) -> float:
    """CPU seconds of one call (robust to other processes taking turns on the cores)."""
    t0 = time.process_time()
    fn()
    return time.process_time() - t0


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def bench_memory(args) -> None:
    say("## 5. Memory over many updates")
    say()
    x = torch.randn(B, T + 1, N, generator=torch.Generator().manual_seed(3))
    alphas = torch.full((T + 1,), 0.1)
    rows = []
    for name, step in (("plain", plain_step), ("fused", fused_step)):
        upd = _update_fn(step, ShPLRNN(N, M, L), x, alphas)
        for _ in range(20):
            upd()
        before = _rss_mb()
        for _ in range(args.mem_updates):
            upd()
        rows.append((name, before, _rss_mb()))
    for name, before, after in rows:
        say(f"{name}: resident memory {before:.1f} MB after 20 updates, {after:.1f} MB after "
            f"{args.mem_updates} more ({after - before:+.1f} MB).")
    say()


def paper_dstsp(model, test_x: np.ndarray) -> float:
    """D_stsp by the GTF paper's protocol (as ``dsrecon.evaluate``): a free run of 1.25 T steps from
    the test series' first point, the first 0.25 T dropped, 30 bins per dimension against all T test
    points. The free run goes through the fused kernel (``fused_generate``, equal to ``generate``)."""
    from dsrecon.fast import fused_generate
    from dsrecon.metrics import state_space_divergence

    n = len(test_x)
    x_gen = fused_generate(model, test_x[0], n + n // 4)[n // 4:]  # (T, N)
    if not bool(torch.all(torch.isfinite(x_gen))):
        return float("inf")
    return float(state_space_divergence(test_x, x_gen.numpy()))


def to_target(args) -> None:
    say("## 8. Wall time to D_stsp <= 0.30 on the GTF paper's Lorenz-63 files")
    say()
    train_x = np.load(DATA / "lorenz63_on0.05_train.npy")
    test_x = np.load(DATA / "lorenz63_test.npy")
    say(f"Train `{DATA / 'lorenz63_on0.05_train.npy'}` {train_x.shape}, test `lorenz63_test.npy` {test_x.shape}. "
        f"Clipped shPLRNN M={M}, L={L}, identity observation, adaptive GTF, paper defaults (B=16, T=200, "
        f"RAdam 1e-3 -> 1e-6 over {args.target_epochs} epochs of 50 updates, reg 1e-5), seed {args.seed}. "
        f"D_stsp by the paper protocol (free run of 125,000 steps from the test series' first point, first "
        f"25,000 dropped, 30 bins, against all 100,000 test points) every {args.val_every} epochs; the "
        f"wall time includes these checks. Cap: {args.max_minutes} min per run.")
    say()
    backends = ["fused"] + (["plain"] if args.to_target_plain else [])
    updates_needed = {}
    for backend in backends:
        model = ShPLRNN(N, M, L, seed=args.seed)
        cfg = TrainConfig(epochs=args.target_epochs, lr_start=1e-3, lr_end=1e-6, seed=args.seed, backend=backend)
        t0 = time.perf_counter()
        hit, trace = {}, []

        def stop(epoch, record, model, hit=hit, t0=t0, trace=trace):
            if epoch % args.val_every:
                return time.perf_counter() - t0 > args.max_minutes * 60
            d = paper_dstsp(model, test_x)
            trace.append((epoch, d))
            if d <= 0.30:
                hit.update(epoch=epoch, d=d, t=time.perf_counter() - t0)
                return True
            return time.perf_counter() - t0 > args.max_minutes * 60
        res = train(model, train_x, cfg, make_forcing("agtf"), progress=False, callback=stop)
        if hit:
            updates_needed[backend] = res.n_updates
            say(f"- {backend}: D_stsp = {hit['d']:.3f} at epoch {hit['epoch']} ({res.n_updates} updates) "
                f"after {hit['t']:.1f} s wall time ({hit['t'] / res.n_updates * 1e3:.1f} ms per update incl. checks)")
        else:
            say(f"- {backend}: not reached within {args.max_minutes} min: {res.epochs} epochs, {res.n_updates} "
                f"updates, best D_stsp {min(d for _, d in trace) if trace else float('nan'):.3f}")
        if trace:
            say("  D_stsp trace (epoch: value): " + ", ".join(f"{e}: {d:.2f}" for e, d in trace[:: max(1, len(trace) // 12)]))
    if "fused" in updates_needed and "plain" not in updates_needed and args.plain_ms:
        say(f"- plain, estimated (not run): the same {updates_needed['fused']} updates at the "
            f"{args.plain_ms:.1f} ms / update measured in section 1 of this run = "
            f"{updates_needed['fused'] * args.plain_ms / 1e3:.0f} s (same trajectory: the fused path has the "
            "plain path's gradients); run with --to-target-plain to measure it.")
    if args.ensemble_target:
        K = args.ensemble_target
        models = [ShPLRNN(N, M, L, seed=args.seed + k) for k in range(K)]
        cfg = TrainConfig(epochs=args.target_epochs, lr_start=1e-3, lr_end=1e-6)
        t0 = time.perf_counter()
        hits = {}

        def stop_all(epoch, records, models, hits=hits, t0=t0):
            if epoch % args.val_every == 0:
                for k, m in enumerate(models):
                    if k not in hits:
                        d = paper_dstsp(m, test_x)
                        if d <= 0.30:
                            hits[k] = (epoch, d, time.perf_counter() - t0)
            return len(hits) == K or time.perf_counter() - t0 > args.max_minutes * 60
        results = train(Ensemble(models, seeds=[args.seed + k for k in range(K)]), train_x, cfg, make_forcing("agtf"),
                        callback=stop_all, progress=False).members
        wall = time.perf_counter() - t0
        say(f"- ensemble of K = {K} seeds ({args.seed}..{args.seed + K - 1}) in one batched run: "
            f"{len(hits)}/{K} reached D_stsp <= 0.30 within {wall:.0f} s ({results[0].epochs} epochs); "
            + "; ".join(f"seed {args.seed + k}: epoch {e}, {t:.0f} s" for k, (e, d, t) in sorted(hits.items())))
    say()


def _series() -> np.ndarray:
    """Training series for the loop timings: the GTF paper's Lorenz-63 file if present, else a random walk."""
    path = DATA / "lorenz63_on0.05_train.npy"
    if path.is_file():
        return np.load(path)[:20_000].astype(np.float32)
    return (np.random.default_rng(0).standard_normal((20_000, N)).cumsum(0) * 0.05).astype(np.float32)


def _timed_loop(fn) -> tuple[float, float]:
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


def bench_training_loops(args) -> None:
    """Whole training loops (windows, forcing policy, loss, backward, RAdam, bookkeeping), not one update."""
    from dsrecon.fast import kernel_threads, set_kernel_threads

    say("## 6. Whole training loops: train() per model vs train(Ensemble) for K seeds")
    say()
    x = _series()
    # the trainers set their own torch threads (TrainConfig.threads, 1); start from torch's default,
    # as a user's script does (an ensemble ignoring it once cost ~1.5x at K = 10)
    torch.set_num_threads(TORCH_DEFAULT_THREADS)
    epochs = args.loop_epochs
    cfg = TrainConfig(epochs=epochs, batches_per_epoch=50, batch_size=B, seq_len=T, val_every=10**6)
    n_upd = epochs * 50
    cores = kernel_threads()
    say(f"{epochs} epochs x 50 updates per measurement, median of {args.loop_reps} interleaved repetitions, after a "
        "warm-up run; times per update (all K models); "
        f"kernel threads: 1, and {cores} (every core this process may use); torch threads as the trainers set them "
        f"(TrainConfig.threads = 1, from torch's default of {TORCH_DEFAULT_THREADS}). Ratios: model-updates per second "
        "against one train() run of one model on the fused path (and, last column, on the plain path).")
    say()
    say("The machine's speed drifts by 10-30 % over minutes (a shared host), so besides the ratio of the "
        "medians the table gives the ratio within each repetition (each K-model run against the train() run "
        "timed just before it): its median and range over the repetitions.")
    say()
    say("| forcing | K | kernel threads | wall ms / update | CPU ms / update | model-updates / wall s | "
        "vs train() fused (wall) | per repetition: median [min, max] | vs train() fused (CPU) | "
        "vs train() plain (wall) |")
    say("|---|---:|---:|---:|---:|---:|---:|---|---:|---:|")
    for kind in ("gtf", "agtf"):
        def forcing(kind=kind):
            return make_forcing("gtf", alpha=0.1) if kind == "gtf" else make_forcing("agtf")
        warm = TrainConfig(epochs=1, batches_per_epoch=5, batch_size=B, seq_len=T, val_every=10**6)
        train(ShPLRNN(N, M, L, seed=99), x, warm, forcing(), progress=False)
        train(Ensemble([ShPLRNN(N, M, L, seed=99)]), x, warm, forcing(), progress=False)
        runs = []  # (key, kernel threads, function, updates it runs)
        for backend in ("fused", "plain"):
            c = dataclasses.replace(cfg, backend=backend, epochs=epochs if backend == "fused" else max(1, epochs // 3))
            runs.append((backend, 1, lambda c=c: train(ShPLRNN(N, M, L, seed=0), x, c, forcing(), progress=False),
                         c.epochs * 50))
        for K in args.K:
            for threads in sorted({1, cores}):
                runs.append(((K, threads), threads,
                             lambda K=K: train(Ensemble([ShPLRNN(N, M, L, seed=k) for k in range(K)]), x, cfg, forcing(),
                                                     progress=False),
                             n_upd))
        runs.append(runs.pop(1))  # the plain loop last: the K-model runs follow the fused train() run they are compared with
        samples = {key: ([], []) for key, *_ in runs}
        for _ in range(args.loop_reps):  # interleaved, so a neighbour's load hits every configuration alike
            for key, threads, fn, n in runs:
                set_kernel_threads(threads)
                try:
                    wall, cpu = _timed_loop(fn)
                finally:
                    set_kernel_threads(None)
                samples[key][0].append(wall / n)
                samples[key][1].append(cpu / n)
        med = {key: (statistics.median(w), statistics.median(c)) for key, (w, c) in samples.items()}
        single = {"fused": med["fused"], "plain": med["plain"]}
        say(f"| {kind} | 1 (train(), fused) | 1 | {single['fused'][0] * 1e3:.2f} | {single['fused'][1] * 1e3:.2f} | "
            f"{1 / single['fused'][0]:.0f} | 1.0x | | 1.0x | {single['plain'][0] / single['fused'][0]:.1f}x |")
        say(f"| {kind} | 1 (train(), plain) | 1 | {single['plain'][0] * 1e3:.2f} | {single['plain'][1] * 1e3:.2f} | "
            f"{1 / single['plain'][0]:.0f} | {single['fused'][0] / single['plain'][0]:.2f}x | | "
            f"{single['fused'][1] / single['plain'][1]:.2f}x | 1.0x |")
        for key in samples:
            if not isinstance(key, tuple):
                continue
            K, threads = key
            w, c = med[key]
            per_rep = sorted(K * t1 / tK for t1, tK in zip(samples["fused"][0], samples[key][0]))
            say(f"| {kind} | {K} | {threads} | {w * 1e3:.2f} | {c * 1e3:.2f} | {K / w:.0f} | "
                f"{K * single['fused'][0] / w:.2f}x | {statistics.median(per_rep):.2f}x "
                f"[{per_rep[0]:.2f}, {per_rep[-1]:.2f}] | {K * single['fused'][1] / c:.2f}x | "
                f"{K * single['plain'][0] / w:.1f}x |")
    torch.set_num_threads(1)
    say()
    say("The issue's ensemble target is K/2 = 5x the single-model throughput at K = 10; against train() on "
        "the fused path see the 'vs train() fused' columns, against the plain loop (one model per process, "
        "the reference implementation's way) the last column.")
    say()


def bench_affine(args) -> None:
    """Per-update time of the other models: plain autograd loop vs the affine-forcing path."""
    from dsrecon.fast.affine_forcing import loss_and_grads as affine_step
    from dsrecon.models import make_model

    say("## 7. Other models: plain loop vs affine-forcing path (one update, B = 16, T = 200, N = 3)")
    say()
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(B, T + 1, N, generator=gen)
    alphas = make_forcing("gtf", alpha=0.1).alphas(T + 1)
    configs = [("RNN, H = 17", "rnn", {"hidden_dim": 17}), ("LSTM, H = 9", "lstm", {"hidden_dim": 9}),
               ("GRU, H = 9", "gru", {"hidden_dim": 9}), ("LEM, H = 9", "lem", {"hidden_dim": 9}),
               ("LSTM input-fed, H = 9", "lstm", {"hidden_dim": 9, "input_fed": True})]
    fns = {}
    for label, name, kw in configs:
        fns[(label, "plain")] = _update_fn(plain_step, make_model(name, obs_dim=N, seed=0, **kw), x, alphas)
        fns[(label, "affine")] = _update_fn(affine_step, make_model(name, obs_dim=N, seed=0, **kw), x, alphas)
    wall, cpu = time_interleaved(fns, args.reps, max(1, args.inner // 3))
    say("| model | plain CPU ms / update | affine CPU ms / update | speed-up (CPU) | speed-up (wall) |")
    say("|---|---:|---:|---:|---:|")
    for label, _, _ in configs:
        p, a = cpu[(label, "plain")], cpu[(label, "affine")]
        say(f"| {label} | {p * 1e3:.1f} | {a * 1e3:.1f} | {p / a:.2f}x | "
            f"{wall[(label, 'plain')] / wall[(label, 'affine')]:.2f}x |")
    say()
    say("Same gradients (tests/test_affine_forcing.py); TrainConfig(backend='auto') takes this path for every "
        "model but the shPLRNN (which takes the fused kernel).")
    say()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--reps", type=int, default=7, help="interleaved repetitions (median reported)")
    p.add_argument("--inner", type=int, default=10, help="updates per repetition")
    p.add_argument("--K", type=int, nargs="+", default=[1, 4, 10], help="ensemble sizes")
    p.add_argument("--compile", action="store_true", help="also time the plain loop with a torch.compile'd step")
    p.add_argument("--mem-updates", type=int, default=300)
    p.add_argument("--loop-epochs", type=int, default=3, help="epochs (x 50 updates) per training-loop timing")
    p.add_argument("--loop-reps", type=int, default=5, help="interleaved repetitions of each training-loop timing")
    p.add_argument("--sections", nargs="+", type=int, default=[1, 2, 3, 4, 5, 6, 7],
                   help="which sections to run (1-7; 2 needs 1)")
    p.add_argument("--to-target", action="store_true", help="wall time to D_stsp <= 0.30 (minutes)")
    p.add_argument("--target-only", action="store_true", help="run only the to-target section")
    p.add_argument("--to-target-plain", action="store_true", help="also run the plain path to target (long)")
    p.add_argument("--ensemble-target", type=int, default=0, help="with --to-target: also train K seeds")
    p.add_argument("--target-epochs", type=int, default=5000)
    p.add_argument("--val-every", type=int, default=10, help="epochs between D_stsp checks")
    p.add_argument("--max-minutes", type=float, default=30.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="write the report (markdown) here")
    args = p.parse_args(argv)
    torch.set_num_threads(1)  # measured below: one thread is fastest for these tiny matrices
    say(f"# Training speed ({_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M} UTC, commit {provenance.commit()})")
    say()
    say(f"Command: `python {' '.join(['benchmarks/train_speed.py', *(argv if argv is not None else sys.argv[1:])])}`  ")
    say(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
        f"{torch.__version__}, numpy {np.__version__}, load average {os.getloadavg()[0]:.2f} at start. "
        "Other processes share this CPU: ratios within one run are the result, absolute times move with load.")
    say()
    args.plain_ms = None
    if not args.target_only:
        sec = set(args.sections)
        if sec & {1, 2}:
            single = bench_paths(args)
            args.plain_ms = single[0]["plain (autograd loop)"] * 1e3
            if 2 in sec:
                bench_ensembles(args, single)
        for number, bench in ((3, bench_threads), (4, bench_denormals), (5, bench_memory),
                              (6, bench_training_loops), (7, bench_affine)):
            if number in sec:
                bench(args)
    if args.to_target or args.target_only:
        to_target(args)
    say(f"Load average at the end: {os.getloadavg()[0]:.2f}; peak resident memory "
        f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB.")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(LINES) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
