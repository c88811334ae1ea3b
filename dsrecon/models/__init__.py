"""Model registry: one name per model family, resolved lazily to its class.

``make_model("shplrnn", obs_dim=3, latent_dim=3, hidden_dim=50)`` builds a model; an unknown
name raises a ``ValueError`` that lists the valid ones.
"""

from __future__ import annotations

from importlib import import_module

from dsrecon.models.base import Model

# name -> "module:Class"; each class documents its constructor arguments.
MODELS: dict[str, str] = {
    "shplrnn": "dsrecon.models.plrnn:ShPLRNN",
    "alrnn": "dsrecon.models.alrnn:ALRNN",
    "lem": "dsrecon.models.lem:LEM",
    "rnn": "dsrecon.models.baselines:RNN",
    "lstm": "dsrecon.models.baselines:LSTM",
    "gru": "dsrecon.models.baselines:GRU",
}


def model_class(name: str) -> type[Model]:
    """The class registered under ``name`` (case-insensitive)."""
    key = name.lower()
    if key not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(sorted(MODELS))}")
    module, cls = MODELS[key].split(":")
    return getattr(import_module(module), cls)


def make_model(name: str, **kwargs) -> Model:
    """Build the model registered under ``name`` with constructor arguments ``kwargs``."""
    return model_class(name)(**kwargs)


__all__ = ["MODELS", "Model", "make_model", "model_class"]
