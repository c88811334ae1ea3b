"""One set of defaults and one seed rule for every model and entry point (issue 17, item 4).

``dsrecon.defaults`` holds the values; ``TrainConfig()``, ``train``'s forcing, ``dsrecon.fit``'s
signature and the ``dsrecon fit`` parser must all read the same numbers, and every model built
without a seed must be the same model on every call, whatever torch's global generator holds.
"""

from __future__ import annotations

import inspect

import pytest
import torch

import dsrecon
from dsrecon import defaults
from dsrecon.cli import build_parser


def test_trainconfig_forcing_fit_and_cli_share_the_defaults():
    cfg = dsrecon.TrainConfig()
    assert (cfg.epochs, cfg.lr_start, cfg.lr_end, cfg.seed) == (defaults.EPOCHS, defaults.LR_START,
                                                                defaults.LR_END, defaults.SEED)
    forcing = dsrecon.default_forcing()
    assert type(forcing) is dsrecon.GTF and forcing.config() == {"name": "gtf", "alpha": defaults.ALPHA}
    assert dsrecon.GTF().config() == forcing.config()
    fit = inspect.signature(dsrecon.fit).parameters
    expected = {"epochs": cfg.epochs, "lr": cfg.lr_start, "lr_end": cfg.lr_end, "seed": cfg.seed,
                "batch_size": cfg.batch_size, "seq_len": cfg.seq_len, "batches_per_epoch": cfg.batches_per_epoch,
                "val_every": cfg.val_every, "hidden_dim": defaults.HIDDEN_DIM, "forcing": defaults.FORCING,
                "backend": cfg.backend, "threads": cfg.threads}
    assert {k: fit[k].default for k in expected} == expected
    args = build_parser().parse_args(["fit", "lorenz63"])
    cli = {"epochs": args.epochs, "lr": args.lr, "lr_end": args.lr_end, "seed": args.seed,
           "batch_size": args.batch_size, "seq_len": args.seq_len, "batches_per_epoch": args.batches_per_epoch,
           "val_every": args.val_every, "hidden_dim": args.hidden_dim, "forcing": args.forcing,
           "backend": args.backend, "threads": args.threads}
    assert cli == expected


def test_train_without_forcing_uses_the_default_forcing(monkeypatch):
    """``train(model, data)`` records GTF(0.1) in its config, as ``dsrecon fit`` does."""
    x = dsrecon.simulate("lorenz63", 400, method="rk4", cache=False, progress=False).x
    model = dsrecon.ShPLRNN(3, 3, 8)
    result = dsrecon.train(model, x, dsrecon.TrainConfig(epochs=1, batches_per_epoch=1, batch_size=2, seq_len=20),
                           progress=False)
    assert result.history[0]["alpha"] == pytest.approx(defaults.ALPHA)


@pytest.mark.parametrize("name, kwargs", [
    ("shplrnn", {"latent_dim": 5, "hidden_dim": 7}), ("lem", {"hidden_dim": 6}), ("rnn", {"hidden_dim": 6}),
    ("lstm", {"hidden_dim": 6}), ("gru", {"hidden_dim": 6})])
def test_a_model_without_seed_is_seed_zero_whatever_the_global_generator(name, kwargs):
    torch.manual_seed(123)
    a = dsrecon.make_model(name, obs_dim=3, **kwargs)
    torch.manual_seed(456)
    b = dsrecon.make_model(name, obs_dim=3, **kwargs)
    c = dsrecon.make_model(name, obs_dim=3, seed=defaults.SEED, **kwargs)
    d = dsrecon.make_model(name, obs_dim=3, seed=1, **kwargs)
    for (key, pa), pb, pc, pd in zip(a.state_dict().items(), b.state_dict().values(), c.state_dict().values(),
                                     d.state_dict().values()):
        assert torch.equal(pa, pb) and torch.equal(pa, pc), key
    assert any(not torch.equal(pa, pd) for pa, pd in zip(a.state_dict().values(), d.state_dict().values()))
    state = torch.get_rng_state()
    dsrecon.make_model(name, obs_dim=3, **kwargs)
    assert torch.equal(torch.get_rng_state(), state)  # the global generator is not even read


@pytest.mark.parametrize("seed", [1.5, "0", True])
def test_a_seed_that_is_not_an_integer_is_refused(seed):
    with pytest.raises(ValueError, match="seed must be an integer"):
        dsrecon.LSTM(3, 4, seed=seed)
