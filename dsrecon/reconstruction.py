"""``Reconstruction``: a fitted model with everything needed to use it on data, in one file.

What ``dsrecon.fit`` returns and ``dsrecon fit`` saves as ``RUN_DIR/reconstruction.pt``: the kept
model, the :class:`~dsrecon.transform.DataTransform` (standardization, delay embedding, dt, channel
names), the settings of the fit, the training history and the reports. It generates and forecasts
in the data's units, evaluates on raw test data and computes the model's Lyapunov spectrum.

File format (``FORMAT_NAME``, version ``FORMAT_VERSION``): one ``torch.save`` zip archive holding
only tensors and primitive containers, read with ``torch.load(weights_only=True)`` (no code from
the file runs on load)::

    {"format": "dsrecon.reconstruction", "version": 1, "dsrecon_version": "...",
     "model": state_dict, "anchors": (K, k N) tensor,
     "json": '{"model": {"name", "config"}, "transform": {...}, "settings": {...},
               "history": [...], "reports": {...}}'}

Tensors come back bit for bit; the JSON part holds floats in Python's shortest round-trip form (NaN
and infinity as JSON's ``NaN``/``Infinity``), so it does too. A reader refuses a file of a newer
version (naming both versions) or of an unknown one; versions it knows are listed in
``READABLE_VERSIONS``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from dsrecon._version import __version__
from dsrecon.checkpoint import ZIP_MAGIC, atomic_write, model_spec
from dsrecon.models import make_model
from dsrecon.models.base import Model
from dsrecon.transform import DataTransform

__all__ = ["Reconstruction", "load_reconstruction", "FORMAT_NAME", "FORMAT_VERSION", "READABLE_VERSIONS",
           "FILE_NAME"]

FORMAT_NAME = "dsrecon.reconstruction"
FORMAT_VERSION = 1
READABLE_VERSIONS = (1,)
FILE_NAME = "reconstruction.pt"  # its name in a run folder


@dataclass(eq=False)
class Reconstruction:
    """A fitted model and its data transform (see the module docstring).

    Attributes
    ----------
    model : Model
        The kept model (the last epoch's, or the best-validated one with ``select="best_val"``).
    transform : DataTransform
        Data units <-> model coordinates.
    settings : dict
        The fit's settings: ``model`` (name and constructor arguments), ``forcing``, ``train``
        (``TrainConfig`` as a dict), ``data`` (where the data came from and how it was split),
        ``embedding`` and ``latent`` choices.
    history : list of dict
        Per-epoch training records (``TrainResult.history``).
    reports : dict
        ``"test"``: the evaluation on held-out data (``Report.to_dict()``), ``"data"``: what
        ``dsrecon.inspection`` found in the training data, ``"diverged"``: why the model counts as
        diverged, or None.
    anchors : torch.Tensor, shape ``(K, k N)``
        Observations in model coordinates, evenly spaced over the training series: the default
        start of :meth:`generate` (the first) and the initial conditions of :meth:`lyapunov`.
    """

    model: Model
    transform: DataTransform
    settings: dict = field(default_factory=dict)
    history: list = field(default_factory=list)
    reports: dict = field(default_factory=dict)
    anchors: torch.Tensor | None = None

    def __post_init__(self):
        if self.transform.model_dim != self.model.obs_dim:
            raise ValueError(f"the transform maps {self.transform.model_dim} model columns, the model observes "
                             f"{self.model.obs_dim}")
        if self.anchors is None:
            raise ValueError("a Reconstruction needs anchors: observations in model coordinates (K, N) to start from")
        self.anchors = torch.as_tensor(self.anchors).detach().cpu()
        if self.anchors.ndim != 2 or self.anchors.shape[1] != self.model.obs_dim or len(self.anchors) == 0:
            raise ValueError(f"anchors must have shape (K, {self.model.obs_dim}), got {tuple(self.anchors.shape)}")

    @property
    def diverged(self) -> str | None:
        """Why the fitted model counts as diverged (non-finite loss or generated series), else None."""
        return self.reports.get("diverged")

    def __repr__(self) -> str:
        t = self.transform
        test = self.reports.get("test") or {}
        scores = ", ".join(f"{k} {test[k]:.3g}" for k in ("d_stsp", "d_h") if isinstance(test.get(k), (int, float)))
        emb = f", delays {list(t.delays)}" if len(t.delays) > 1 else ""
        return (f"Reconstruction({self.model.name}, {self.model.n_params} parameters, "
                f"{t.describe_channels()}{emb}, dt {t.dt:g}{'' if t.dt_known else ' (samples)'}"
                f"{', ' + scores if scores else ''})")

    # ----------------------------------------------------------------- use
    def _model_tensor(self, x: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(x, dtype=self.model._dtype(), device=self.model._device())

    def generate(self, n_steps: int, x0=None) -> torch.Tensor:
        """Free-running series of ``n_steps`` observations in the data's units.

        Parameters
        ----------
        n_steps : int >= 1
        x0 : array, optional
            Start, in data units: one observation ``(N,)``, or for a delay-embedded reconstruction
            the ``max(delays) + 1`` samples ``(span, N)`` that make up one model vector. Default:
            the first training anchor.

        Returns
        -------
        torch.Tensor, shape ``(n_steps, N)``, float64 on the CPU; row 0 is the start itself
        (``x0``, or for an embedded start its first sample) as the model reads it back.
        """
        from dsrecon.rollout import generate

        if isinstance(n_steps, bool) or not isinstance(n_steps, (int, np.integer)) or n_steps < 1:
            raise ValueError(f"n_steps must be a positive integer, got {n_steps!r}")
        if x0 is None:
            start = self.anchors[:1].to(device=self.model._device(), dtype=self.model._dtype())  # (1, k N)
        else:
            raw = np.asarray(x0.detach().cpu().numpy() if isinstance(x0, torch.Tensor) else x0, dtype=np.float64)
            span, n = self.transform.span, self.transform.n_channels
            if raw.shape == (n,) and span == 1:
                raw = raw[None]
            if raw.shape != (span, n):
                want = f"({n},)" if span == 1 else f"({span}, {n}) (the {span} samples one model vector spans)"
                raise ValueError(f"x0 must have shape {want} in the data's units, got {raw.shape}")
            start = self._model_tensor(self.transform.to_model(raw))  # (1, k N)
        was_training = self.model.training
        self.model.eval()
        try:
            x = generate(self.model, start, int(n_steps), out_device="cpu")[0]  # (n_steps, k N)
        finally:
            self.model.train(was_training)
        return self.transform.to_data(x)  # (n_steps, N)

    def forecast(self, context, horizon: int, *, alpha: float = 1.0) -> torch.Tensor:
        """Predict the ``horizon`` samples that follow a context window, in the data's units.

        The latent state is inferred by forcing the model with the whole context
        (:func:`dsrecon.forecasting.infer_state`; ``alpha = 1``: teacher forcing), then the model
        runs freely; for a delay-embedded reconstruction each prediction is read from the newest
        block of the model vector.

        Parameters
        ----------
        context : array ``(T, N)`` or ``(B, T, N)``, data units
            ``T >= max(delays) + 1``; several windows of one length at once with ``B``.
        horizon : int >= 1
        alpha : float in [0, 1]
            Forcing strength while reading the context.

        Returns
        -------
        torch.Tensor, shape ``(horizon, N)`` or ``(B, horizon, N)``, float64 on the CPU: row ``j``
        predicts the sample ``j + 1`` steps after the context's last.
        """
        from dsrecon.forecasting import forecast_from_context

        raw = self.transform.check_raw(context, "the context")
        if raw.ndim > 3:
            raise ValueError(f"the context must be (T, N) or (B, T, N), got shape {raw.shape}")
        single = raw.ndim == 2
        x = self._model_tensor(self.transform.to_model(raw[None] if single else raw))  # (B, T', k N)
        was_training = self.model.training
        self.model.eval()
        try:
            pred = forecast_from_context(self.model, x, horizon, alpha).cpu()  # (B, horizon, k N)
        finally:
            self.model.train(was_training)
        out = self.transform.latest_to_data(pred)  # (B, horizon, N)
        return out[0] if single else out

    def evaluate(self, test, config=None):
        """Score the model on raw test data (``dsrecon.evaluate`` after mapping it into model coordinates).

        Parameters
        ----------
        test : Trajectory, array ``(T, N)`` or anything ``dsrecon.load`` reads, in the data's units;
            trials (a ``TrialSet``, a list of arrays, ...) are mapped trial by trial and scored per
            trial and pooled
        config : EvalConfig, optional

        Returns
        -------
        Report
        """
        from dsrecon.data import Trajectory, TrialSet, load
        from dsrecon.evaluation import evaluate

        traj = test if isinstance(test, (Trajectory, TrialSet)) else load(test)
        t = self.transform

        def to_model(one: Trajectory) -> Trajectory:
            x = t.to_model(one.x)  # (T', k N)
            return Trajectory(x, dt=t.dt, name=one.name, meta={"dt_known": t.dt_known})

        if isinstance(traj, TrialSet):
            return evaluate(self.model, traj.map_trials(to_model, dt=t.dt, meta={"dt_known": t.dt_known}), config)
        return evaluate(self.model, to_model(traj), config)

    def lyapunov(self, n_steps: int = 10_000, *, transient: int = 1_000, qr_every: int = 1):
        """The model's Lyapunov spectrum (Benettin/QR, ``dsrecon.lyapunov.lyapunov_spectrum``) from the
        anchors; per time unit when ``dt`` is known, else per step (``result.dt``)."""
        from dsrecon.lyapunov import lyapunov_spectrum

        t = self.transform
        with torch.no_grad():
            return lyapunov_spectrum(self.model, self.anchors.to(self.model._device(), self.model._dtype()),
                                     n_steps, transient=transient, qr_every=qr_every,
                                     dt=t.dt if t.dt_known else None)

    def cycles(self, period: int = 1, **kwargs) -> list:
        """Fixed points (``period=1``) or cycles of minimal period ``period`` of the kept model, by the
        exact search over its linear regions (:func:`dsrecon.analysis.find_cycles`, piecewise-linear
        models: shPLRNN, ALRNN; ``kwargs`` go to it). Each :class:`~dsrecon.analysis.cycle.Cycle` has
        its eigenvalues and type, and its points in latent, model and data units (``.data``: the
        model's columns mapped back with the training mean and std, delay-major for an embedding)."""
        from dsrecon.analysis import find_cycles

        k = len(self.transform.delays)  # model columns: k delay blocks of the N channels
        return find_cycles(self.model, period, data_mean=np.tile(self.transform.mean, k),
                           data_std=np.tile(self.transform.std, k), **kwargs)

    # ----------------------------------------------------------------- storage
    def save(self, path) -> Path:
        """Write the reconstruction to ``path`` atomically (conventionally ``.pt``); see the module docstring."""
        doc = {"model": model_spec(self.model), "transform": self.transform.to_dict(), "settings": self.settings,
               "history": [dict(r) for r in self.history], "reports": self.reports}
        try:
            text = json.dumps(doc, allow_nan=True, default=_plain)
        except TypeError as err:
            raise ValueError(f"the reconstruction's settings, history or reports hold a value JSON cannot store "
                             f"({err}); keep them to numbers, strings, lists and dicts") from None
        state = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "dsrecon_version": __version__,
                 "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
                 "anchors": self.anchors.clone(), "json": text}
        return atomic_write(path, lambda f: torch.save(state, f))


def _plain(value):
    """NumPy scalars and arrays as the Python numbers and lists they hold (for ``json.dumps``)."""
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _find_file(path: Path) -> Path:
    if path.is_dir():
        candidate = path / FILE_NAME
        if candidate.is_file():
            return candidate
        raise FileNotFoundError(f"no {FILE_NAME} in {path}; a run folder written by `dsrecon fit` holds one "
                                "(runs made before it existed: refit, or load the model with dsrecon.load_checkpoint)")
    if not path.exists():
        raise FileNotFoundError(f"no reconstruction at {path}: no such file or folder; give a run folder of "
                                f"`dsrecon fit` or a {FILE_NAME} file")
    return path


def load_reconstruction(path, *, device=None) -> Reconstruction:
    """Read a reconstruction written by :meth:`Reconstruction.save` (or a run folder holding one).

    Safe: the file is read with ``torch.load(weights_only=True)``, which builds only tensors and
    primitive containers, so no code from the file runs.

    Parameters
    ----------
    path : str or Path
        A ``reconstruction.pt`` file, or a run folder of ``dsrecon fit`` that holds one.
    device : str or torch.device, optional
        Where the model goes (default CPU).

    Raises
    ------
    FileNotFoundError
        No such file, or a folder without ``reconstruction.pt``.
    ValueError
        Not a reconstruction file (empty, not a torch archive, a training checkpoint, damaged), or a
        format version this dsrecon cannot read (the message names it).
    """
    path = _find_file(Path(path))
    with open(path, "rb") as f:
        head = f.read(4)
    if head != ZIP_MAGIC:
        what = "empty (0 bytes)" if not head else f"not a torch archive (it starts with {head!r})"
        raise ValueError(f"cannot read reconstruction {path}: the file is {what}; give a file written by "
                         "Reconstruction.save or `dsrecon fit`")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated archive, or objects a safe load refuses
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(f"cannot read reconstruction {path}: truncated, damaged or holding objects a safe load "
                         f"refuses ({type(err).__name__}: {reason})") from err
    if not isinstance(state, dict) or state.get("format") != FORMAT_NAME:
        hint = (" (it is a training checkpoint: read it with dsrecon.load_checkpoint)"
                if isinstance(state, dict) and "config_json" in state else "")
        raise ValueError(f"{path} is not a dsrecon reconstruction{hint}")
    version = state.get("version")
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
        raise ValueError(f"{path} is a reconstruction of format version {version}, written by dsrecon "
                         f"{state.get('dsrecon_version', '?')}; this dsrecon ({__version__}) reads versions "
                         f"{', '.join(map(str, READABLE_VERSIONS))}: upgrade dsrecon to load it")
    if version not in READABLE_VERSIONS or isinstance(version, bool):
        raise ValueError(f"{path} has an unknown reconstruction format version {version!r}; this dsrecon "
                         f"({__version__}) reads versions {', '.join(map(str, READABLE_VERSIONS))}")
    try:
        doc = json.loads(state["json"])
        spec = doc["model"]
        model = make_model(spec["name"], **spec["config"])
        model.load_state_dict(state["model"])
        transform = DataTransform.from_dict(doc["transform"])
        rec = Reconstruction(model, transform, doc.get("settings", {}), doc.get("history", []),
                             doc.get("reports", {}), state["anchors"])
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(f"{path}: a reconstruction of format version {version}, but its contents are damaged or "
                         f"incomplete ({type(err).__name__}: {first})") from err
    if device is not None:
        rec.model.to(device)
    return rec
