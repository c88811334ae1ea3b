"""The one set of defaults of every entry point: ``dsrecon.fit``, ``dsrecon fit``, ``dsrecon.train``
(one model or an ``Ensemble``), ``TrainConfig()`` and the model constructors.

Training defaults (used when an argument is left out, in Python and on the command line alike):

* the clipped shPLRNN with ``M = max(N, LATENT_DIM)`` latent units and ``L = HIDDEN_DIM``;
* generalized teacher forcing with a constant ``alpha = ALPHA`` (``dsrecon.forcing.default_forcing``);
* ``EPOCHS`` epochs of RAdam with the learning rate decaying exponentially from ``LR_START`` to
  ``LR_END``; batches, window length and the regularizer are the GTF paper's (``TrainConfig``).

How they were chosen: on Lorenz-63 (100 epochs, L = 50, 100,000-step test), ``M = 3`` with adaptive
or fixed GTF ended on limit cycles or coexisting fixed points, while ``M = 10`` with GTF(0.1)
reached the attractor; ``alpha = 0.1`` is about ``1 - 1/G`` for the growth ``G ~ 1.1-1.3``
measured along Lorenz-63 data, while adaptive GTF starts at 1 and decays too slowly for a short run;
600 epochs with the faster schedule (3e-3 -> 1e-5) reach the paper's Lorenz-63 quality in minutes on
a CPU. The GTF paper's own protocol is longer: ``PAPER_TRAINING`` below, with
``dsrecon.AdaptiveGTF()`` (adaptive alpha from 1), i.e.
``dsrecon.train(model, data, dsrecon.TrainConfig(**dsrecon.defaults.PAPER_TRAINING), dsrecon.AdaptiveGTF())``.

Seed rule (every model, every entry point): randomness comes only from local generators seeded
by an integer; a seed left out is ``SEED`` (0). So ``make_model(name, ...)`` with no seed builds
the same model on every call, for every model family, and ``TrainConfig().seed``, ``dsrecon.fit``
and ``dsrecon fit --seed`` start from the same 0. Torch's global generator is neither read nor
reseeded by library code; pass ``seed=`` (or ``generator=``) for another draw.

This module imports nothing, so the command line can read it without importing torch.
"""

SEED = 0
LATENT_DIM = 10
HIDDEN_DIM = 50
FORCING = "gtf"
ALPHA = 0.1
EPOCHS = 600
LR_START = 3e-3
LR_END = 1e-5
# training time a fit may take by default (seconds; dsrecon fit --budget): the README's main job
# trains in well under a minute, a large recording is capped with a message instead of running hours
BUDGET_S = 600.0

# which parameters dsrecon.fit keeps: those of the validation epoch whose VAL_STARTS free runs, from
# states spread over the last 20 % of the training part, scored best (dsrecon.selection), since a run's
# last epoch can land on a collapsed or spurious orbit beside the attractor it learned; chosen on the
# reconstruction zoo and the GTF paper's ECG (benchmarks/results/zoo_2026-12-07_analysis.md,
# ecg_gtf_2026-12-07_analysis.md). TrainConfig keeps "last", the paper's protocol: dsrecon.train may
# run without validation data.
SELECT = "best_val"
VAL_STARTS = 8
# the GTF paper's schedule (Hess et al., ICML 2023), to use with AdaptiveGTF()
PAPER_TRAINING = {"epochs": 5000, "lr_start": 1e-3, "lr_end": 1e-6}

__all__ = ["SEED", "LATENT_DIM", "HIDDEN_DIM", "FORCING", "ALPHA", "EPOCHS", "LR_START", "LR_END",
           "BUDGET_S", "SELECT", "VAL_STARTS", "PAPER_TRAINING"]
