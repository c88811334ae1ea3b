"""Reconstruct the Santa Fe laser (data set A) from a delay embedding with a shPLRNN.

    python examples/santafe_laser.py            # a few minutes on a laptop CPU
    python examples/santafe_laser.py --quick    # seconds: checks the pipeline, numbers mean nothing

The recording is one-dimensional (10,093 intensity samples of a chaotic far-infrared NH3 laser;
Weigend & Gershenfeld 1994), so the state space is rebuilt by delay embedding:

1. load and z-score the series (``dsrecon.load("santafe")``, shipped inside reservoirpy);
2. delay = first minimum of the time-delayed mutual information (Fraser & Swinney 1986);
   dimension = smallest one whose false-nearest-neighbour fraction is below 1% (Kennel et al. 1992);
3. delay-embed, split chronologically (the last 20% is the test set);
4. fit a clipped shPLRNN (identity observation, latent dimension = embedding dimension) with
   adaptive generalized teacher forcing;
5. evaluate on the held-out continuation: D_stsp, D_H, PE(20), lambda_max of model and data.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import dsrecon


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny budget, for a smoke test")
    parser.add_argument("--out", default="santafe_laser", help="output folder")
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    # 1. the recording, z-scored (mean and std are kept in meta for unstandardize)
    laser = dsrecon.load("santafe", standardize=True)
    print(f"Santa Fe laser: {laser.n_steps} samples")

    # 2. embedding parameters from the data
    delay = dsrecon.choose_delay(laser)
    dim = dsrecon.choose_embedding_dim(laser, delay, max_dim=8, n_points=3000 if args.quick else 10_000)
    delays = [k * delay for k in range(dim)]
    print(f"delay {delay} samples (first minimum of the mutual information), dimension {dim} "
          f"(false nearest neighbours < 1%): delays {delays}")

    # 3. embed and split chronologically
    embedded = dsrecon.delay_embed(laser, delays)  # (T - max delay, dim)
    train_data, test_data = dsrecon.train_test_split(embedded, test_fraction=0.2)
    print(f"train {train_data.x.shape}, test {test_data.x.shape}")

    # 4. a shPLRNN in the embedding space, trained with adaptive GTF
    model = dsrecon.make_model("shplrnn", obs_dim=dim, latent_dim=dim, hidden_dim=16 if args.quick else 100,
                               seed=args.seed)
    if args.quick:
        config = dsrecon.TrainConfig(epochs=2, batches_per_epoch=5, batch_size=8, seq_len=50, seed=args.seed)
    else:
        config = dsrecon.TrainConfig(epochs=args.epochs, seed=args.seed, val_every=50, val_steps=1000)
    result = dsrecon.train(model, train_data, config, dsrecon.make_forcing("agtf"),
                   val_data=None if args.quick else test_data, progress=not args.quick)
    print(f"trained {model.n_params} parameters for {result.epochs} epochs in {result.train_time_s:.1f} s, "
          f"final loss {result.history[-1]['loss']:.4g}")

    # 5. evaluate on the continuation the model never saw
    fast = dsrecon.EvalConfig(lyapunov_steps=100, lyapunov_transient=20, lyapunov_initial=2)  # --quick: rough
    report = dsrecon.evaluate(model, test_data, fast if args.quick else None)
    report.save(out / "report.json")
    print(report)

    # a free-running sample next to the data, for the eye (needs matplotlib)
    x_gen = report.generated  # (T_test, dim): the series evaluate compared, after its warm-up
    np.save(out / "generated.npy", x_gen)
    try:
        from dsrecon.plotting import plot_attractor

        plot_attractor(test_data.x, x_gen, out / "attractor.png")
        print(f"figure: {out / 'attractor.png'}")
    except ImportError:
        print("matplotlib not installed: no figure (pip install dsrecon[plot])")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
