"""One training engine: ``train(Ensemble(...))`` for every model family, through one seam.

Facts checked: an ensemble member of every registered family ends where a separate ``train`` run
with its seed ends (the shPLRNN's kernel bit for bit, ``torch.equal``; the generic stack, autograd
vmapped over the members, to float64 rounding: batched kernels may sum in another order); members
may follow different forcing strengths; a diverging member is restored and frozen while its
neighbours train on as their separate runs; a stopped ensemble resumes exactly; the trainer reaches
the kernels only through ``dsrecon.stacking``; any ``Model`` subclass, registered or not, with or
without ``affine_forcing``, trains in an ensemble.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch

from dsrecon.ensemble import Ensemble
from dsrecon.forcing import GTF, make_forcing
from dsrecon.models import MODELS, make_model
from dsrecon.models.base import Model
from dsrecon.stacking import stack_class
from dsrecon.training import TrainConfig, train

CONFIG = TrainConfig(epochs=2, batches_per_epoch=4, batch_size=3, seq_len=15, noise_std=0.01, lr_start=3e-3)
KWARGS = {"shplrnn": {"latent_dim": 4, "hidden_dim": 8}, "lem": {"hidden_dim": 4}, "rnn": {"hidden_dim": 5},
          "lstm": {"hidden_dim": 4}, "gru": {"hidden_dim": 5}, "alrnn": {"latent_dim": 5, "n_relu": 2}}


def _series(n=300, dtype=np.float64) -> np.ndarray:
    return (np.cumsum(np.random.default_rng(0).standard_normal((n, 3)), 0) * 0.05).astype(dtype)


def _separate(name, seed, series, forcing, config=CONFIG, **kw):
    alone = make_model(name, obs_dim=3, seed=seed, dtype=torch.float64, **KWARGS[name], **kw)
    result = train(alone, series, TrainConfig(**{**config.__dict__, "seed": seed}), forcing, progress=False)
    return alone, result


def _assert_member_is_run(member, member_result, alone, alone_result, exact: bool):
    for (name, p), q in zip(alone.named_parameters(), member.parameters()):
        if exact:
            assert torch.equal(p, q), name
        else:  # float64 rounding of a few dozen updates
            torch.testing.assert_close(q, p, rtol=1e-9, atol=1e-12, msg=name)
    assert member_result.n_updates == alone_result.n_updates
    for key in ("loss", "alpha", "grad_norm", "G"):
        got = [h[key] for h in member_result.history]
        want = [h[key] for h in alone_result.history]
        if exact:
            assert np.array_equal(got, want, equal_nan=True), key
        else:
            np.testing.assert_allclose(got, want, rtol=1e-8, err_msg=key)


def test_every_registered_family_is_covered():
    assert set(KWARGS) == set(MODELS)


@pytest.mark.parametrize("forcing", ["gtf", "agtf"])
@pytest.mark.parametrize("name", sorted(KWARGS))
def test_member_equals_separate_run(name, forcing):
    """Built by name, member k has its seed's initialization and windows: it is that seed's separate run."""
    kw = {"alpha": 0.2} if forcing == "gtf" else {"every": 2}
    seeds = [3, 11, 5]
    series = _series()
    ens = Ensemble(name, seeds=seeds, obs_dim=3, dtype=torch.float64, **KWARGS[name])
    result = train(ens, series, CONFIG, make_forcing(forcing, **kw), progress=False)
    assert len(result.members) == 3 and result.finished and result.n_updates == 8
    exact = stack_class(name) is not stack_class("generic-family")  # a hand-written kernel: bit for bit
    for k, seed in enumerate(seeds):
        alone, ref = _separate(name, seed, series, make_forcing(forcing, **kw))
        _assert_member_is_run(ens[k], result.members[k], alone, ref, exact)


@pytest.mark.parametrize("name", ["lstm", "shplrnn"])
def test_members_follow_their_own_forcing_strength(name):
    seeds, alphas = [0, 1], [0.1, 0.4]
    series = _series()
    ens = Ensemble(name, seeds=seeds, obs_dim=3, dtype=torch.float64, **KWARGS[name])
    result = train(ens, series, CONFIG, [GTF(a) for a in alphas], progress=False)
    for k, (seed, alpha) in enumerate(zip(seeds, alphas)):
        assert [h["alpha"] for h in result.members[k].history] == [alpha] * CONFIG.epochs
        alone, ref = _separate(name, seed, series, GTF(alpha))
        _assert_member_is_run(ens[k], result.members[k], alone, ref, exact=name == "shplrnn")
    with pytest.raises(ValueError, match="sequence of 2 policies"):
        train(ens, series, CONFIG, [GTF(0.1)], progress=False)


def test_diverging_member_is_frozen_and_its_neighbour_trains_on():
    series = _series(dtype=np.float32)
    cfg = TrainConfig(**{**CONFIG.__dict__, "max_recoveries": 2, "seed": 0})
    together = [make_model("lstm", obs_dim=3, hidden_dim=4, seed=s) for s in (0, 1)]
    with torch.no_grad():
        together[1].B.fill_(1e30)  # its float32 predictions overflow: the loss is not finite
    start = [p.detach().clone() for p in together[1].parameters()]
    with pytest.warns(RuntimeWarning, match="ensemble model 1: non-finite"):
        result = train(Ensemble(together, seeds=[0, 1]), series, cfg, GTF(0.2), progress=False)
    assert result.members[1].recoveries == 3 and not result.members[1].finished and not result.finished
    assert any("frozen after 3 recoveries" in h.get("warning", "") for h in result.members[1].history)
    for p, q in zip(start, together[1].parameters()):
        assert torch.equal(p, q)
    alone = make_model("lstm", obs_dim=3, hidden_dim=4, seed=0)
    train(alone, series, cfg, GTF(0.2), progress=False)
    assert result.members[0].finished and result.members[0].recoveries == 0
    for p, q in zip(alone.parameters(), together[0].parameters()):
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-6)


def test_generic_ensemble_resumes_exactly(tmp_path):
    series = _series()
    cfg = TrainConfig(**{**CONFIG.__dict__, "epochs": 4, "checkpoint_every": 1})

    def ensemble():
        return Ensemble("gru", seeds=[2, 3], obs_dim=3, hidden_dim=5, dtype=torch.float64)

    straight = ensemble()
    ref = train(straight, series, cfg, make_forcing("agtf", every=2), progress=False)
    first = ensemble()
    part = train(first, series, cfg, make_forcing("agtf", every=2), run_dir=tmp_path, progress=False,
                 callback=lambda epoch, records, models: epoch == 2)
    assert part.epochs == 2 and not part.finished
    resumed = ensemble()
    out = train(resumed, series, cfg, make_forcing("agtf", every=2), run_dir=tmp_path, resume=True, progress=False)
    for k in range(2):
        for p, q in zip(straight[k].parameters(), resumed[k].parameters()):
            assert torch.equal(p, q)
        assert [h["loss"] for h in out.members[k].history] == [h["loss"] for h in ref.members[k].history]


class _Toy(Model):
    """A model the registry does not know, without affine_forcing: z' = tanh(W z + b), x = z[:N]."""

    name = "toy"

    def __init__(self, seed: int):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.obs_dim, self.state_dim = 3, 4
        self.W = torch.nn.Parameter(0.5 * torch.randn(4, 4, generator=g, dtype=torch.float64))
        self.b = torch.nn.Parameter(0.1 * torch.randn(4, generator=g, dtype=torch.float64))

    def initial_state(self, x0):
        return torch.cat([x0, x0.new_zeros(x0.shape[0], 1)], dim=-1)

    def step(self, z):
        return torch.tanh(z @ self.W.T + self.b)

    def observe(self, z):
        return z[..., :3]

    def state_from_obs(self, x, z):
        return torch.cat([x, z[..., 3:]], dim=-1)

    def config(self):
        return {}


def test_any_model_subclass_trains_in_an_ensemble():
    """The generic stack needs nothing but the model contract (here: the plain forcing rule)."""
    series = _series()
    together = [_Toy(s) for s in (0, 1)]
    result = train(Ensemble(together, seeds=[0, 1]), series, CONFIG, GTF(0.3), progress=False)
    for k in range(2):
        alone = _Toy(k)
        ref = train(alone, series, TrainConfig(**{**CONFIG.__dict__, "seed": k}), GTF(0.3), progress=False)
        _assert_member_is_run(together[k], result.members[k], alone, ref, exact=False)


def test_trainer_imports_no_kernel():
    """The ensemble trainer reaches the fast paths only through dsrecon.stacking."""
    root = Path(__file__).resolve().parents[1] / "dsrecon"
    for module in ("member_training.py", "stacking.py", "ensemble.py"):
        tree = ast.parse((root / module).read_text())
        imported = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        assert not [m for m in imported if m and m.startswith("dsrecon.fast")], module


def test_ensemble_arguments_are_checked():
    with pytest.raises(ValueError, match="needs k="):
        Ensemble("lstm", obs_dim=3, hidden_dim=4)
    with pytest.raises(ValueError, match="2 seeds"):
        Ensemble("lstm", k=3, seeds=[0, 1], obs_dim=3, hidden_dim=4)
    with pytest.raises(ValueError, match="same class and config"):
        Ensemble([make_model("lstm", obs_dim=3, hidden_dim=4), make_model("lstm", obs_dim=3, hidden_dim=5)])
    with pytest.raises(ValueError, match="need a model name"):
        Ensemble([make_model("gru", obs_dim=3, hidden_dim=4)], hidden_dim=4)
    ens = Ensemble("rnn", k=3, obs_dim=3, hidden_dim=4)
    assert ens.seeds == [0, 1, 2] and len(ens) == 3 and ens.name == "rnn"


@pytest.mark.gpu
def test_generic_ensemble_trains_on_cuda():
    """The generic stack is device-agnostic: a CUDA member ends where a CPU member ends, to rounding."""
    series = _series()
    cfg = TrainConfig(**{**CONFIG.__dict__, "device": "cuda"})
    on_gpu = Ensemble("lstm", seeds=[0, 1], obs_dim=3, hidden_dim=4, dtype=torch.float64)
    train(on_gpu, series, cfg, GTF(0.2), progress=False)
    on_cpu = Ensemble("lstm", seeds=[0, 1], obs_dim=3, hidden_dim=4, dtype=torch.float64)
    train(on_cpu, series, CONFIG, GTF(0.2), progress=False)
    for p, q in zip(on_cpu.parameters(), on_gpu.parameters()):
        assert q.device.type == "cuda"
        torch.testing.assert_close(q.cpu(), p, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("alphas", ["gtf", "stf", "free"])
@pytest.mark.parametrize("name", sorted(KWARGS))
def test_generic_stack_gradients_equal_each_members_plain_gradients(name, alphas):
    """The vmapped rollout's per-member loss, data-inferred states and gradients are the plain
    autograd reference's (:func:`dsrecon.loss.loss_and_grads`), member by member (float64 rounding),
    with a different forcing per member."""
    from dsrecon.loss import loss_and_grads
    from dsrecon.vmap_stack import VmapStack

    K, n = 3, 21
    models = [make_model(name, obs_dim=3, seed=s, dtype=torch.float64, **KWARGS[name]) for s in range(K)]
    stack = VmapStack(models)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(K, 4, n, 3, generator=g, dtype=torch.float64)
    target = x + 0.01 * torch.randn(K, 4, n, 3, generator=g, dtype=torch.float64)
    a = {"gtf": torch.full((n,), 0.3), "stf": torch.tensor([float(i % 5 == 0) for i in range(n)]),
         "free": torch.zeros(n)}[alphas]
    per_member = torch.stack([a, a * 0.5, torch.zeros(n)]).double()  # (K, T + 1)
    loss, mse, z_hat = stack.loss_and_grads(x, per_member, 1e-3, target)
    for k, model in enumerate(models):
        ref = loss_and_grads(model, x[k], per_member[k], 1e-3, target=target[k])
        assert float(loss[k]) == pytest.approx(ref.loss, rel=1e-12)
        assert float(mse[k]) == pytest.approx(ref.mse, rel=1e-12)
        torch.testing.assert_close(z_hat[k], ref.z_hat, rtol=1e-10, atol=1e-12)
        for pname, p in model.named_parameters():
            got = getattr(stack, pname.replace(".", "__")).grad[k]
            torch.testing.assert_close(got, p.grad, rtol=1e-9, atol=1e-12, msg=pname)


def test_seam_picks_the_kernel_stack_only_where_one_is_registered():
    from dsrecon.fast.ensemble import EnsembleShPLRNN
    from dsrecon.vmap_stack import VmapStack

    assert stack_class("shplrnn") is EnsembleShPLRNN and stack_class("shplrnn", "fused") is EnsembleShPLRNN
    assert stack_class("shplrnn", "plain") is VmapStack  # the autograd reference, batched
    for name in ("lem", "rnn", "lstm", "gru", "a-future-model"):
        assert stack_class(name) is VmapStack


def test_shplrnn_ensemble_on_the_generic_stack_matches_its_kernel():
    """The same ensemble through the C kernel and through autograd vmapped over the members
    (``TrainConfig.backend='plain'``) ends at the same parameters to float64 rounding."""
    series = _series()
    runs = []
    for backend in ("auto", "plain"):
        ens = Ensemble("shplrnn", seeds=[0, 1], obs_dim=3, dtype=torch.float64, **KWARGS["shplrnn"])
        train(ens, series, TrainConfig(**{**CONFIG.__dict__, "backend": backend}), make_forcing("agtf", every=2),
              progress=False)
        runs.append(ens)
    for p, q in zip(runs[0].parameters(), runs[1].parameters()):
        torch.testing.assert_close(q, p, rtol=1e-9, atol=1e-12)
