"""Generalized teacher forcing bounds the gradients that explode in free-running BPTT on chaos.

For a chaotic shPLRNN, the loss gradient over a window of T steps grows like exp(lambda_max T)
when the model runs freely (alpha = 0; Mikhaeil et al. 2022). With GTF at alpha >= 1 - 1/G, where
G bounds the per-step Jacobian growth along the data, the products of forced Jacobians
(1 - alpha) J_t stay bounded and so does the gradient (Hess et al. 2023). This script measures
both: the gradient norm as a function of T, and the fitted growth rate of log ||grad|| over T.

Two chaotic models:

* ``--model tent`` (default): a clipped shPLRNN with M = N = L = 1 that equals the tent map
  z' = 1.9 min(z, 1 - z) on [0, 1]; |J| = 1.9 everywhere, so lambda_max = ln 1.9 = 0.642 per step.
* ``--model lorenz``: a shPLRNN trained on Lorenz-63 (loaded from ``--checkpoint``, or trained
  here for ``--epochs``); its lambda_max is measured with the QR method before the experiment.

Usage::

    python examples/bounded_gradients.py --quick
    python examples/bounded_gradients.py --model lorenz --checkpoint runs/lorenz63-.../checkpoints/last.pt
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch

import dsrecon
from dsrecon.forcing import growth_bound
from dsrecon.models.plrnn import ShPLRNN
from dsrecon.rollout import forced_rollout
from dsrecon.training import loss_and_grads


def tent_model(mu: float = 1.9) -> ShPLRNN:
    """Clipped shPLRNN equal to the tent map mu min(z, 1 - z) on [0, 1] (see tests/test_forcing.py)."""
    m = ShPLRNN(1, 1, 1, seed=0, dtype=torch.float64)
    with torch.no_grad():
        m.A.fill_(-mu), m.W1.fill_(-2 * mu), m.W2.fill_(1.0), m.h2.fill_(-0.5), m.h1.fill_(0.0)
    return m


def tent_data(n: int, mu: float = 1.95, s: float = 0.3141) -> torch.Tensor:
    """A tent-map series with another slope, so the model's errors stay O(1) over a window."""
    out = []
    for _ in range(n):
        out.append(s)
        s = mu * min(s, 1 - s)
    return torch.tensor(out, dtype=torch.float64)[:, None]  # (n, 1)


def lorenz_model(args) -> tuple[ShPLRNN, torch.Tensor]:
    data = dsrecon.simulate("lorenz63", n_steps=20_000, seed=0)
    x = torch.as_tensor(data.x, dtype=torch.float64)
    if args.checkpoint:
        model, _ = dsrecon.load_checkpoint(args.checkpoint)
    else:
        model = ShPLRNN(3, 3, 50, seed=0)
        cfg = dsrecon.TrainConfig(epochs=args.epochs, lr_end=1e-5)
        print(f"training a shPLRNN on Lorenz-63 for {args.epochs} epochs ...")
        dsrecon.train(model, data, cfg, dsrecon.GTF(0.2), progress=True)
    return model.double(), x


def lambda_max_per_step(model, x0) -> float:
    from dsrecon.lyapunov import lyapunov_spectrum

    return float(lyapunov_spectrum(model, x0, n_steps=20_000, transient=1000).exponents[0])


def grad_norms(model, series: torch.Tensor, lengths, alpha: float, n_windows: int = 8) -> np.ndarray:
    """||d loss / d theta|| for windows of each length, forced with ``alpha`` (reg. weight 0)."""
    norms = []
    step = max(1, (series.shape[0] - max(lengths) - 1) // n_windows)
    for T in lengths:
        starts = torch.arange(n_windows) * step
        x = series[starts[:, None] + torch.arange(T + 1)]  # (B, T + 1, N)
        model.zero_grad()
        loss_and_grads(model, x, torch.full((T + 1,), alpha, dtype=torch.float64), 0.0)
        g = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        norms.append(float(torch.linalg.vector_norm(g)))
    return np.array(norms)


def growth_rate(lengths, norms) -> float:
    """Slope of a least-squares line through (T, log ||grad||), per step."""
    return float(np.polyfit(np.asarray(lengths, float), np.log(norms), 1)[0])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=("tent", "lorenz"), default="tent")
    p.add_argument("--checkpoint", help="trained Lorenz-63 model (dsrecon fit run) for --model lorenz")
    p.add_argument("--epochs", type=int, default=100, help="training epochs for --model lorenz without checkpoint")
    p.add_argument("--max-len", type=int, default=400, help="longest window T")
    p.add_argument("--quick", action="store_true", help="short windows and a short training")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    if args.quick:
        args.max_len, args.epochs = min(args.max_len, 150), min(args.epochs, 20)
    if args.model == "tent":
        model, series = tent_model(), tent_data(args.max_len + 400)
        lam, what = math.log(1.9), "analytic ln 1.9"
    else:
        model, series = lorenz_model(args)
        lam, what = lambda_max_per_step(model, series[:8]), "QR method, 20,000 steps"
    print(f"model: {args.model}; lambda_max = {lam:.4f} per step ({what})")
    if not lam > 0:
        print("the model is not chaotic (lambda_max <= 0): free-running gradients need not explode; "
              "train longer or use --model tent")
    z_hat = forced_rollout(model, series[None, : min(series.shape[0], 2000)], 1.0).z_hat
    G = growth_bound(model, z_hat)
    alpha = max(0.0, 1 - 1 / G)
    lengths = list(np.unique(np.linspace(10, args.max_len, 12).astype(int)))
    free, forced = grad_norms(model, series, lengths, 0.0), grad_norms(model, series, lengths, alpha)
    print(f"G = {G:.4f} (geometric mean of ||J||_2 along the data) -> alpha = 1 - 1/G = {alpha:.4f}")
    print(f"{'T':>5} {'free ||grad||':>15} {'GTF ||grad||':>14}")
    for T, a, b in zip(lengths, free, forced):
        print(f"{T:5d} {a:15.4g} {b:14.4g}")
    print(f"growth rate of log ||grad|| per step: free running {growth_rate(lengths, free):+.4f} "
          f"(lambda_max {lam:+.4f}), GTF {growth_rate(lengths, forced):+.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
