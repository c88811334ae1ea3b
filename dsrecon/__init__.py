"""dsrecon: dynamical-systems reconstruction.

``dsrecon.fit`` runs the whole pipeline of ``dsrecon fit`` and returns a ``Reconstruction``::

    rec = dsrecon.fit("recording.npy", dt=0.01)     # look, split, standardize, embed, train, evaluate
    x = rec.generate(10_000)                        # data units
    rec.save("rec.pt"); rec = dsrecon.load_reconstruction("rec.pt")

Six verbs run it step by step::

    import dsrecon
    train_data = dsrecon.simulate("lorenz63", n_steps=100_000, seed=0)   # or dsrecon.load(path)
    model = dsrecon.make_model("shplrnn", obs_dim=3, latent_dim=3, hidden_dim=50)
    result = dsrecon.train(model, train_data)
    x_gen = dsrecon.generate(model, train_data.x[:1], n_steps=10_000)
    report = dsrecon.evaluate(model, test_data)
    table = dsrecon.compare("grid.toml")

Only the names in ``__all__`` are public; they are imported lazily so that ``import dsrecon`` and
``dsrecon --version`` stay fast and free of side effects.
"""

from importlib import import_module

from dsrecon._version import __version__

# public name -> module that defines it
_PUBLIC = {
    # data
    "Trajectory": "dsrecon.data",
    "TrialSet": "dsrecon.trials",
    "load": "dsrecon.data",
    "standardize": "dsrecon.data",
    "train_test_split": "dsrecon.data",
    "sample_windows": "dsrecon.data",
    "delay_embed": "dsrecon.embedding",
    "choose_delay": "dsrecon.embedding",
    "choose_embedding_dim": "dsrecon.embedding",
    "simulate": "dsrecon.systems",
    "simulate_batch": "dsrecon.systems",
    # models
    "Model": "dsrecon.models.base",
    "make_model": "dsrecon.models",
    "MODELS": "dsrecon.models",
    "ShPLRNN": "dsrecon.models.plrnn",
    "ALRNN": "dsrecon.models.alrnn",
    "LEM": "dsrecon.models.lem",
    "RNN": "dsrecon.models.baselines",
    "LSTM": "dsrecon.models.baselines",
    "GRU": "dsrecon.models.baselines",
    # training
    "generate": "dsrecon.rollout",
    "GTF": "dsrecon.forcing",
    "AdaptiveGTF": "dsrecon.forcing",
    "SparseTF": "dsrecon.forcing",
    "NoForcing": "dsrecon.forcing",
    "TeacherForcing": "dsrecon.forcing",
    "make_forcing": "dsrecon.forcing",
    "default_forcing": "dsrecon.forcing",
    "Ensemble": "dsrecon.ensemble",
    "TrainConfig": "dsrecon.training",
    "TrainResult": "dsrecon.training",
    "train": "dsrecon.training",
    "save_checkpoint": "dsrecon.checkpoint",
    "load_checkpoint": "dsrecon.checkpoint",
    # evaluation
    "EvalConfig": "dsrecon.evaluation",
    "Report": "dsrecon.evaluation",
    "evaluate": "dsrecon.evaluation",
    "compare": "dsrecon.comparison",
    # the fitted object
    "fit": "dsrecon.fitting",
    "Reconstruction": "dsrecon.reconstruction",
    "load_reconstruction": "dsrecon.reconstruction",
    "DataTransform": "dsrecon.transform",
    "forecast_from_context": "dsrecon.forecasting",
    # analysis of piecewise-linear models
    "find_cycles": "dsrecon.analysis.search",
    "find_fixed_points": "dsrecon.analysis.search",
    "find_attractors": "dsrecon.analysis.basins",
    "basin_map": "dsrecon.analysis.basins",
    "bifurcation_sweep": "dsrecon.analysis.bifurcation",
}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name):
    if name in _PUBLIC:
        value = getattr(import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'dsrecon' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
