"""The settings and the result of a training run: ``TrainConfig`` and ``TrainResult``.

Shared by the one-model loop (:func:`dsrecon.training.train`) and the member-axis loop of an
ensemble (:mod:`dsrecon.member_training`), which :func:`dsrecon.training.train` runs for a
:class:`dsrecon.ensemble.Ensemble`. Defaults: :mod:`dsrecon.defaults` (the same for ``dsrecon.fit``
and ``dsrecon fit``); batches, windows and regularizer as in the GTF paper (Hess et al., ICML 2023).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from dsrecon import defaults
from dsrecon._device import check_device
from dsrecon.selection import SELECTIONS

# backend name -> "module:function" with the signature of dsrecon.loss.loss_and_grads (one-model runs)
BACKENDS = {"auto": "dsrecon.fast.auto_backend:loss_and_grads", "plain": "dsrecon.training:loss_and_grads",
            "fused": "dsrecon.fast:loss_and_grads", "affine": "dsrecon.fast.affine_forcing:loss_and_grads"}


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training run (defaults: :mod:`dsrecon.defaults`; docs/method.md section 3).

    Attributes
    ----------
    epochs : int
        Number of epochs (600; the paper trains up to 5000: ``dsrecon.defaults.PAPER_TRAINING``).
    batches_per_epoch, batch_size, seq_len : int
        50 updates per epoch, B = 16 windows of ``seq_len + 1 = 201`` steps.
    lr_start, lr_end : float
        RAdam learning rate, decaying exponentially from 3e-3 to 1e-5 over the epochs (paper: 1e-3
        to 1e-6 over 5000 epochs).
    reg_weight : float
        lambda of the model's regularizer (1e-5).
    grad_clip : float or None
        Clip the total gradient norm (None: no clipping, as in the paper).
    noise_std : float
        Std of Gaussian noise added to the windows that feed the initial state and the forcing
        signals (targets stay clean); 0 disables it.
    seed : int
        Seed of the local generator for windows and noise.
    device : str
        Torch device of the model and data.
    val_every : int
        Epochs between validations (D_stsp, D_H on ``val_data``); the last epoch is always validated.
    diag_every : int
        Epochs between evaluations of the growth-bound diagnostic ``G`` recorded in the history
        (NaN in the other epochs; the last epoch always has it). It takes one Jacobian and one
        spectral norm per state of the epoch's last batch: cheap for the shPLRNN (analytic), about
        as costly as a whole epoch of updates for the 60-70-dimensional states of an ECG-sized LEM/LSTM.
    val_steps : int
        Length of the validation comparison: the model generates ``1.25 val_steps`` steps from the
        first validation point, drops the first quarter and is compared with the first
        ``val_steps`` points (the paper's protocol on a shorter series, for speed).
    val_starts : int
        Free runs per validation, from this many states spread evenly over the validation series
        (the first is its first point); D_stsp and D_H are their means (a run whose output is
        constant counts D_H = 1, its largest value), and ``val_collapsed`` counts the runs that
        collapsed (:func:`dsrecon.metrics.is_collapsed`). A reconstruction can hold the data's
        attractor and a spurious fixed point side by side: one free run then tells which basin its
        start lay in, not whether the model is sound, and model selection on it is a lottery. 1 (the
        default) is the paper's single run.
    checkpoint_every : int
        Epochs between checkpoints (when ``run_dir`` is given); the last epoch is always saved.
    backend : str
        ``"auto"`` (default: fused for a shPLRNN, the generic one-member stack for the other models,
        bit-identical to an ensemble member), ``"plain"`` (autograd reference), ``"fused"`` (``dsrecon.fast``;
        the shPLRNN's compiled kernel) or ``"affine"`` (the forcing folded into one product per step,
        for LEM, RNN, LSTM, GRU, ALRNN); same gradients (tests); speed: docs/performance.md.
    lr_recovery_factor : float
        Learning-rate factor applied after a non-finite loss or parameter (0.5).
    max_recoveries : int
        Recoveries in a row (without a clean epoch in between) before the run stops with an error.
    select : {"last", "best_val"}
        Which parameters the model holds at the end: those of the last epoch (the GTF paper's
        protocol), or those of the validation epoch whose free run scored best
        (:mod:`dsrecon.selection`; needs ``val_data``, validated every ``val_every`` epochs). Either
        way the result records the best-validated epoch and its parameters.
    threads : int or None
        Torch intra-op threads while training on a CPU (the previous setting is restored after).
        1 by default: the per-step tensors of these models are tiny, so extra threads only add
        synchronization, and on a shared CPU their spin-waiting slows an update by an order of
        magnitude (docs/performance.md). None keeps torch's setting.
    """

    epochs: int = defaults.EPOCHS
    batches_per_epoch: int = 50
    batch_size: int = 16
    seq_len: int = 200
    lr_start: float = defaults.LR_START
    lr_end: float = defaults.LR_END
    reg_weight: float = 1e-5
    grad_clip: float | None = None
    noise_std: float = 0.0
    seed: int = defaults.SEED
    device: str = "cpu"
    val_every: int = 25
    diag_every: int = 1
    val_steps: int = 10_000
    val_starts: int = 1
    checkpoint_every: int = 10
    backend: str = "auto"
    lr_recovery_factor: float = 0.5
    max_recoveries: int = 8
    select: str = "last"
    threads: int | None = 1

    def __post_init__(self):
        for name in ("epochs", "batches_per_epoch", "batch_size", "seq_len", "val_every", "diag_every", "val_steps",
                     "val_starts", "checkpoint_every", "max_recoveries"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"TrainConfig.{name} must be a positive integer, got {v!r}")
        if not (0 < self.lr_end <= self.lr_start):
            raise ValueError(f"need 0 < lr_end <= lr_start, got lr_start={self.lr_start}, lr_end={self.lr_end}")
        if self.reg_weight < 0 or self.noise_std < 0:
            raise ValueError(f"reg_weight and noise_std must be >= 0, got {self.reg_weight}, {self.noise_std}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"grad_clip must be None or > 0, got {self.grad_clip}")
        if not 0 < self.lr_recovery_factor < 1:
            raise ValueError(f"lr_recovery_factor must lie in (0, 1), got {self.lr_recovery_factor}")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise ValueError(f"TrainConfig.threads must be None or a positive integer, got {self.threads!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r}; valid: {', '.join(BACKENDS)}")
        if self.select not in SELECTIONS:
            raise ValueError(f"unknown TrainConfig.select {self.select!r}; valid: {', '.join(SELECTIONS)}")
        check_device(self.device, "TrainConfig.device (CLI: --device)")

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class TrainResult:
    """What ``train`` returns (the model itself is trained in place).

    Attributes
    ----------
    history : list of dict
        One record per epoch: epoch, loss, mse, alpha, grad_norm, G, lr, time_s (cumulative
        training seconds), and d_stsp, d_h on validation epochs; ``warning`` on recoveries.
    train_time_s : float
        Training wall time in seconds (including earlier segments of a resumed run).
    n_updates : int
        Parameter updates performed.
    epochs : int
        Completed epochs.
    finished : bool
        Whether all ``config.epochs`` were completed (False when a callback stopped the run).
    recoveries : int
        Non-finite events recovered from in this call.
    metrics : dict
        Latest validation metrics (``d_stsp``, ``d_h``), empty without ``val_data``.
    run_dir : str or None
        Folder with config.json, history.csv and checkpoints/.
    best_epoch : int or None
        The validation epoch whose free run scored best (:mod:`dsrecon.selection`); None without
        validation data or when no validation produced a finite score.
    best_state : dict or None
        The model's ``state_dict`` at ``best_epoch``; the model holds it when
        ``TrainConfig.select == "best_val"``.
    members : list of TrainResult or None
        For an ensemble (:class:`dsrecon.ensemble.Ensemble`): one result per member, in member
        order, each what a separate run with the member's seed returns. The ensemble's own
        ``history`` then holds per-epoch means over the members that updated (``loss``, ``mse``,
        ``grad_norm``) with ``lr`` and ``time_s``; ``recoveries`` is their sum; ``finished`` is True
        when every member finished; ``best_epoch`` and ``best_state`` are None (see the members).
        None for a one-model run.
    """

    history: list
    train_time_s: float
    n_updates: int
    epochs: int
    finished: bool
    recoveries: int = 0
    metrics: dict = field(default_factory=dict)
    run_dir: str | None = None
    best_epoch: int | None = None
    best_state: dict | None = None
    members: list | None = None

    @property
    def final_loss(self) -> float:
        return self.history[-1]["loss"] if self.history else float("nan")


# TrainConfig fields a resumed run may change: where and how it runs, how often it reports, not what it learns
RESUME_IGNORED = frozenset({"device", "checkpoint_every", "val_every", "diag_every", "val_steps", "backend", "threads",
                            "select"})


__all__ = ["BACKENDS", "RESUME_IGNORED", "TrainConfig", "TrainResult"]
