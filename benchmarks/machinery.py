"""What each piece of the fast path's tuning machinery saves on whole training runs (issue 15, item 3).

Each piece is switched off in turn, in the same process, and whole ``dsrecon.train`` runs are timed
with and without it, repetitions interleaved so a neighbour's load hits all variants alike:

- ``torch RAdam``: ``torch.optim.RAdam(foreach=True)`` instead of the one-call C update
  (:class:`dsrecon.fast.radam.FusedRAdam`);
- ``no stacked_sumsq``: per-member gradient norms and finiteness checks with torch calls instead of
  one C pass (:func:`dsrecon.fast._kernels.stacked_sumsq`);
- ``torch Jacobian norms``: the growth bound's spectral norms with PyTorch's ``eigvalsh`` instead of
  the C kernel (:mod:`dsrecon.fast.jacobian_norms`); matters for adaptive GTF, which evaluates the
  bound every 5 updates, and little for GTF, which logs it once per epoch;
- ``torch log``: the growth bound's geometric mean with torch's log instead of NumPy's
  (:func:`dsrecon.forcing.reduce_norms`);
- ``run-time M``: the float32 kernel built without its compile-time latent sizes (M <= 8, 10, 12,
  16: fully unrolled M-loops), every M a run-time value as in the float64 kernel.

Cases: Lorenz-63 sizes (M = 3, L = 50, identity observation, the GTF paper's files) and the ECG's
(M = 5, L = 250, affine observation), one model and an ensemble of K = 10 seeds, GTF and adaptive GTF;
B = 16 windows of T = 200 steps, 50 updates per epoch, no validation. A piece that saves less than
10 % of every case's wall time is not worth its code (the brief's rule).

Usage (repository root, venv active)::

    python benchmarks/machinery.py --out benchmarks/results/machinery_<date>.md
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import provenance  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

import dsrecon.member_training  # noqa: E402
import dsrecon.training  # noqa: E402
from dsrecon.ensemble import Ensemble  # noqa: E402
from dsrecon.fast import _kernels  # noqa: E402
from dsrecon.forcing import make_forcing  # noqa: E402
from dsrecon.models import make_model  # noqa: E402
from dsrecon.training import TrainConfig, train  # noqa: E402

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "gtf_icml2023"
LINES: list[str] = []


def say(line: str = "") -> None:
    print(line, flush=True)
    LINES.append(line)


# ------------------------------------------------------------------------------- the switches
@contextlib.contextmanager
def torch_radam():
    """Both trainers build ``torch.optim.RAdam`` instead of the C-loop subclass."""
    def make(params, lr):
        return torch.optim.RAdam(params, lr=lr, foreach=True)

    saved = dsrecon.training.make_optimizer, dsrecon.member_training.make_optimizer
    dsrecon.training.make_optimizer = dsrecon.member_training.make_optimizer = make
    try:
        yield
    finally:
        dsrecon.training.make_optimizer, dsrecon.member_training.make_optimizer = saved


@contextlib.contextmanager
def no_stacked_sumsq():
    """``stacked_sumsq`` declines every call, so the callers take their torch computation."""
    saved = _kernels.stacked_sumsq
    _kernels.stacked_sumsq = lambda tensors, K: None
    try:
        yield
    finally:
        _kernels.stacked_sumsq = saved


@contextlib.contextmanager
def torch_jacobian_norms():
    """The Jacobian-norm kernel is skipped for every latent size, so PyTorch's eigvalsh runs."""
    saved = _kernels._MAX_M
    _kernels._MAX_M = 0  # read only by stacked_jacobian_norms' choice of path
    try:
        yield
    finally:
        _kernels._MAX_M = saved


@contextlib.contextmanager
def torch_log():
    """The growth bound's reduction with torch's log on every device (the NumPy branch skipped)."""
    import dsrecon.forcing as forcing

    saved = forcing.reduce_norms

    def reduce_norms(norms, estimator="geometric_mean"):
        if estimator != "geometric_mean":
            return saved(norms, estimator)
        return torch.exp(torch.log(norms.double()).mean(-1)).amax(-1)

    forcing.reduce_norms = reduce_norms
    try:
        yield
    finally:
        forcing.reduce_norms = saved


_RUNTIME_M_LIB = None


@contextlib.contextmanager
def runtime_m():
    """The kernel library built from the same source with the float32 loops' compile-time latent sizes
    replaced by the run-time M of the float64 loops (built once, cached under its own key)."""
    global _RUNTIME_M_LIB
    from dsrecon.fast import _build

    if _RUNTIME_M_LIB is None:
        source = _build.c_source()
        variant = source.replace("(float, f32, SPECIALIZE_M)", "(float, f32, RUNTIME_M)")
        if variant.count("(float, f32, RUNTIME_M)") != 2:
            raise RuntimeError("the kernel source no longer has the two float32 SPECIALIZE_M definitions")
        saved_source = _build.c_source
        _build.c_source = lambda: variant
        try:
            _RUNTIME_M_LIB = _build.build_library()
        finally:
            _build.c_source = saved_source
    saved = _kernels._LIB
    _kernels._LIB = _RUNTIME_M_LIB
    try:
        yield
    finally:
        _kernels._LIB = saved


VARIANTS = {"all pieces": contextlib.nullcontext, "torch RAdam": torch_radam,
            "no stacked_sumsq": no_stacked_sumsq, "torch Jacobian norms": torch_jacobian_norms,
            "torch log": torch_log, "run-time M": runtime_m}


# ------------------------------------------------------------------------------- the cases
def case_data(name: str) -> np.ndarray:
    if name == "lorenz63":
        x = np.load(DATA / "lorenz63_on0.05_train.npy")
    else:
        x = np.load(DATA / "ECG_pecuzal_5d_train.npy")
    return np.ascontiguousarray(x, dtype=np.float32)


SIZES = {"lorenz63": dict(latent_dim=3, hidden_dim=50), "ecg": dict(latent_dim=5, hidden_dim=250, observation="affine")}
FORCINGS = {"GTF": dict(name="gtf", alpha=0.1), "aGTF": dict(name="agtf")}


def run_fn(data_name: str, forcing: str, k: int, epochs: int):
    x = case_data(data_name)
    cfg = TrainConfig(epochs=epochs, batches_per_epoch=50, seq_len=200, batch_size=16, seed=0, backend="auto")

    def run():
        models = [make_model("shplrnn", obs_dim=x.shape[1], seed=s, **SIZES[data_name]) for s in range(k)]
        target = models[0] if k == 1 else Ensemble(models, seeds=list(range(k)))
        train(target, x, cfg, make_forcing(**FORCINGS[forcing]), progress=False)
    return run


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=5, help="interleaved repetitions per variant (median reported)")
    p.add_argument("--epochs", type=int, default=4, help="epochs (x 50 updates) per timed run")
    p.add_argument("--K", type=int, default=10, help="ensemble size")
    p.add_argument("--threads", type=int, default=1, help="kernel threads (1: the other core may be busy)")
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS)[1:], help="pieces to switch off (default: all)")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    if not DATA.is_dir():
        p.error(f"needs the GTF paper's files under {DATA}")
    _kernels.c_library()  # build (or load) the kernel before timing
    torch.set_num_threads(1)
    _kernels.set_kernel_threads(args.threads)
    warnings.simplefilter("ignore")
    say(f"# Tuning machinery on whole training runs ({_dt.date.today()})")
    say("")
    say(f"Command: `python benchmarks/machinery.py {' '.join(argv if argv is not None else sys.argv[1:])}`  ")
    say(f"Commit: {provenance.commit()}  ")
    say(f"Machine: {platform.machine()}, {torch.get_num_threads()} torch thread, {args.threads} kernel thread(s), "
        f"torch {torch.__version__}. Each cell: median wall seconds of one whole `train` run "
        f"({args.epochs} epochs x 50 updates, B = 16, T = 200) over {args.reps} interleaved repetitions, and the "
        "change against `all pieces` in the same row.")
    say("")
    variants = {"all pieces": VARIANTS["all pieces"],
                **{v: VARIANTS[v] for v in (args.variants or list(VARIANTS)[1:])}}
    with variants.get("run-time M", contextlib.nullcontext)():
        pass  # builds the variant library before any timing
    cases = [(d, f, k) for d in ("lorenz63", "ecg") for f in ("GTF", "aGTF") for k in (1, args.K)]
    say("| case | " + " | ".join(variants) + " |")
    say("|---|" + "---|" * len(variants))
    for data_name, forcing, k in cases:
        run = run_fn(data_name, forcing, k, args.epochs)
        run()  # warm-up: first-call costs (kernel load, allocations) outside the timing
        times = {v: [] for v in variants}
        for _ in range(args.reps):
            for name, switch in variants.items():
                with switch():
                    t0 = time.perf_counter()
                    run()
                    times[name].append(time.perf_counter() - t0)
        med = {v: statistics.median(t) for v, t in times.items()}
        base = med["all pieces"]
        cells = [f"{base:.2f} s"] + [f"{med[v]:.2f} s ({100 * (med[v] / base - 1):+.0f} %)" for v in list(variants)[1:]]
        say(f"| {data_name}, {forcing}, K = {k} | " + " | ".join(cells) + " |")
    if args.out:
        args.out.write_text("\n".join(LINES) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
