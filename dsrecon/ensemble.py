"""An ensemble: K models of one family and one configuration, trained together along a member axis.

Users train 10-20 seeds per configuration. ``train(Ensemble("lstm", k=8, obs_dim=3, hidden_dim=20),
data)`` trains the K members in one batched computation (:mod:`dsrecon.member_training`): member
k draws its windows from its own generator, follows its own forcing policy (its own alpha) and
keeps its own history, so it computes what a separate ``train`` run with its seed computes. The
members' parameters are stacked along a leading member axis while they train (the model family's
hand-written kernel where one is registered, otherwise autograd batched with ``torch.func.vmap``;
:mod:`dsrecon.stacking`) and written back into the member models after every epoch.
"""

from __future__ import annotations

from typing import Sequence

from torch import nn

from dsrecon.models import make_model
from dsrecon.models.base import Model


class Ensemble(nn.Module):
    """K models with the same constructor arguments, each with its own seed.

    Parameters
    ----------
    models : str or sequence of Model
        A registered model name (``"shplrnn"``, ``"lem"``, ``"rnn"``, ``"lstm"``, ``"gru"``, ...):
        the K members are built with ``make_model(models, seed=seeds[k], **model_kwargs)``. Or K
        models already built, all of one class and one ``config()`` (used as they are, trained in
        place).
    k : int, optional
        Number of members (with a model name: ``seeds`` defaults to ``0 .. k - 1``).
    seeds : sequence of int, optional
        One seed per member. With a model name it seeds both the member's initialization and its
        window sampling, so member k equals ``train(make_model(name, seed=seeds[k], **kw), data,
        TrainConfig(seed=seeds[k]))``. With built models it seeds their window sampling only;
        None there means ``config.seed + k`` at training time.
    **model_kwargs
        Constructor arguments of the members (with a model name only).

    Attributes
    ----------
    members : nn.ModuleList
        The K models; after ``train`` they hold the trained parameters.
    seeds : list of int or None
        The members' window seeds (None: ``config.seed + k``).
    """

    def __init__(self, models: str | Sequence[Model], k: int | None = None, *, seeds: Sequence[int] | None = None,
                 **model_kwargs):
        super().__init__()
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
            raise ValueError(f"Ensemble k must be a positive integer, got {k!r}")
        if seeds is not None:
            seeds = [int(s) for s in seeds]
            if k is not None and len(seeds) != k:
                raise ValueError(f"Ensemble got k={k} but {len(seeds)} seeds; give one seed per member")
            if len(set(seeds)) != len(seeds):
                raise ValueError(f"Ensemble seeds must differ (one run per seed), got {seeds}")
        if isinstance(models, str):
            if k is None and seeds is None:
                raise ValueError(f"Ensemble({models!r}) needs k= (seeds 0 .. k-1) or seeds=")
            seeds = list(range(k)) if seeds is None else seeds
            if "seed" in model_kwargs or "generator" in model_kwargs:
                raise ValueError("Ensemble sets each member's seed from seeds=; drop seed=/generator=")
            models = [make_model(models, seed=s, **model_kwargs) for s in seeds]
        else:
            if model_kwargs:
                raise ValueError(f"constructor arguments {sorted(model_kwargs)} need a model name, e.g. "
                                 "Ensemble('lstm', k=8, obs_dim=3, hidden_dim=20); built models are used as they are")
            models = list(models)
            if k is not None and k != len(models):
                raise ValueError(f"Ensemble got k={k} but {len(models)} models")
            if seeds is not None and len(seeds) != len(models):
                raise ValueError(f"Ensemble needs one seed per model, {len(models)}, got {len(seeds)}")
        if not models or not all(isinstance(m, Model) for m in models):
            raise ValueError("Ensemble needs a model name or a non-empty sequence of dsrecon models, got "
                             f"{[type(m).__name__ for m in models]}")
        first = models[0]
        for i, m in enumerate(models[1:], 1):
            if type(m) is not type(first) or m.config() != first.config():
                raise ValueError(f"all members of an ensemble need the same class and config; member 0 is "
                                 f"{type(first).__name__} {first.config()}, member {i} is {type(m).__name__} "
                                 f"{m.config()}")
        self.members = nn.ModuleList(models)
        self.seeds = seeds

    @property
    def K(self) -> int:
        """Number of members."""
        return len(self.members)

    @property
    def name(self) -> str:
        """Registry name of the members' family."""
        return self.members[0].name

    def window_seeds(self, base_seed: int) -> list[int]:
        """The members' window seeds: ``seeds``, or ``base_seed + k`` when none were given."""
        return list(self.seeds) if self.seeds is not None else [base_seed + k for k in range(self.K)]

    def __len__(self) -> int:
        return self.K

    def __getitem__(self, k: int) -> Model:
        return self.members[k]

    def __iter__(self):
        return iter(self.members)

    def extra_repr(self) -> str:
        return f"K={self.K}, family={self.name!r}, seeds={self.seeds}"


__all__ = ["Ensemble"]
