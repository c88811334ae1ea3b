"""Recurrent baselines for DSR: vanilla RNN (tanh), LSTM and GRU as autonomous one-step maps.

Each baseline is a classical recurrent cell without external input, run as a discrete-time map on
its hidden state, with an affine readout ``x_hat = B h + c`` of the hidden vector ``h`` (docs/method.md
section 2, "Baselines"). They follow the same contract as the shPLRNN, so the trainer, the forcing
and the evaluation are shared and a comparison changes one thing at a time.

This module also holds :class:`RecurrentModel`, the machinery every hidden-state model with an
affine readout shares (LEM too, in ``dsrecon.models.lem``): the state layout, the readout, forcing
through the pseudo-inverse, the initial state and the input-fed variant.

State layout (``M = state_dim``)::

    autonomous:  z = (h, a)        h: (H,) read out and forced;  a: the cell's other blocks
    input_fed:   z = (u, h, a)     u: (N,) last observation estimate, read by the cell as input

``a`` is empty for the RNN and GRU, the memory cell ``c`` for the LSTM and ``z`` for LEM.

Forcing (docs/method.md section 2): autonomous models are forced on ``h`` only, through the pseudo-inverse
of the readout, ``h_hat = h + B^+ (x - c - B h)`` (``B^+`` detached): the part of ``h`` the
observation determines is replaced by ``B^+ (x - c)``, the part in the null space of ``B`` is
kept. Input-fed models are forced on ``u`` (``u_hat = x``), so GTF with alpha = 1 is classical
teacher forcing of the input. For the LSTM only ``h`` is forced, never the memory cell ``c``: at
alpha near 1 the cell must carry the state by itself, which makes one-step prediction harder for
the LSTM than for the GRU or LEM, whose updates have a direct ``h -> h`` path.

Regularization: none (``regularization()`` is zero, so ``TrainConfig.reg_weight`` has no effect);
the shPLRNN's penalty pulls its diagonal ``A`` to 1, which has no counterpart in these cells.
"""

from __future__ import annotations

import abc
import math

import torch
from torch import nn

from dsrecon.models.base import Model, resolve_generator

_DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16,
           "bfloat16": torch.bfloat16}


def resolve_dtype(dtype) -> torch.dtype:
    """A ``torch.dtype`` from a dtype or its name (``"float32"``, ``"torch.float64"``)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    key = str(dtype).removeprefix("torch.")
    if key not in _DTYPES:
        raise ValueError(f"dtype must be a torch floating dtype or one of {sorted(_DTYPES)}, got {dtype!r}")
    return _DTYPES[key]


def _check_size(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


class RecurrentModel(Model):
    """Shared base of the hidden-state models with an affine readout (LEM, RNN, LSTM, GRU).

    Subclasses set ``n_blocks`` (hidden blocks of size H in the state: 1 for RNN/GRU, 2 for
    LSTM/LEM), create their cell parameters in ``_init_cell`` and implement ``_cell``.

    Parameters
    ----------
    obs_dim : int
        N, observed dimension.
    hidden_dim : int
        H, hidden width of the cell.
    input_fed : bool
        If True, the state carries the last observation estimate ``u`` (first N coordinates),
        the cell reads it as its input through matrices ``V`` (H x N per gate), and after each
        step ``u <- B h + c``; ``observe`` returns ``u`` (docs/method.md section 2, "Input-fed variant").
    learned_init : bool
        If True, the blocks after ``h`` start at a learned linear map of ``x0`` (zero-initialized
        ``(n_blocks - 1) H x N`` matrix) instead of 0.
    generator, seed
        Source of the initialization randomness (:func:`dsrecon.models.base.resolve_generator`:
        neither given means seed 0).
    dtype : torch.dtype or str
        Parameter dtype (float64 for Jacobian checks).
    """

    n_blocks: int = 1
    affine_forcing = True  # state_from_obs: h + B^+ (x - c - B h) or u <- x, B^+ and c detached

    def __init__(self, obs_dim: int, hidden_dim: int, *, input_fed: bool = False,
                 learned_init: bool = False, generator: torch.Generator | None = None,
                 seed: int | None = None, dtype=torch.float32):
        super().__init__()
        self.obs_dim = _check_size("obs_dim", obs_dim)
        self.hidden_dim = _check_size("hidden_dim", hidden_dim)
        self.input_fed = bool(input_fed)
        self.learned_init = bool(learned_init)
        self.dtype_name = str(resolve_dtype(dtype)).removeprefix("torch.")
        n_in = self.obs_dim if self.input_fed else 0
        self.state_dim = n_in + self.n_blocks * self.hidden_dim
        if self.learned_init and self.n_blocks == 1:
            raise ValueError(f"learned_init=True needs a state block besides h; {type(self).__name__} "
                             "has none (use LSTM or LEM, or learned_init=False)")
        gen = resolve_generator(generator, seed)
        dt = resolve_dtype(dtype)
        H, N = self.hidden_dim, self.obs_dim
        self._init_cell(gen, dt)
        # readout x_hat = B h + c: B Kaiming-normal (as LEM's official classifier), c U(-1/sqrt(H), 1/sqrt(H))
        self.B = nn.Parameter(nn.init.kaiming_normal_(torch.empty(N, H, dtype=dt), generator=gen))
        self.c = nn.Parameter(self._uniform((N,), gen, dt))
        if self.learned_init:
            self.init_map = nn.Parameter(torch.zeros((self.n_blocks - 1) * H, N, dtype=dt))
        else:
            self.init_map = None

    # ----------------------------------------------------------------- subclass hooks
    @abc.abstractmethod
    def _init_cell(self, gen: torch.Generator, dtype: torch.dtype) -> None:
        """Create the cell's parameters (weights and biases U(-1/sqrt(H), 1/sqrt(H)))."""

    @abc.abstractmethod
    def _cell(self, h: torch.Tensor, a: torch.Tensor, u: torch.Tensor | None):
        """One cell update ``(h, a, u) -> (h_next, a_next)``; ``u`` is None unless input-fed."""

    def _uniform(self, shape, gen, dtype) -> torch.Tensor:
        bound = 1.0 / math.sqrt(self.hidden_dim)
        return torch.empty(shape, dtype=dtype).uniform_(-bound, bound, generator=gen)

    def _input_weights(self, n_gates: int, gen, dtype) -> nn.Parameter | None:
        """``V`` (n_gates H, N) for the input-fed variant, None otherwise."""
        if not self.input_fed:
            return None
        return nn.Parameter(self._uniform((n_gates * self.hidden_dim, self.obs_dim), gen, dtype))

    # ----------------------------------------------------------------- state layout
    def _split(self, z: torch.Tensor):
        """``z (B, M) -> (u (B, N) or None, h (B, H), a (B, (n_blocks-1) H))``."""
        n_in = self.obs_dim if self.input_fed else 0
        H = self.hidden_dim
        u = z[..., :n_in] if self.input_fed else None
        return u, z[..., n_in:n_in + H], z[..., n_in + H:]

    def _pack(self, u, h, a) -> torch.Tensor:
        parts = ([u] if u is not None else []) + [h, a]
        return torch.cat(parts, dim=-1)

    def _readout(self, h: torch.Tensor) -> torch.Tensor:
        return h @ self.B.T + self.c  # (B, N)

    def _pinv(self) -> torch.Tensor:
        """``B^+`` (H, N), detached: forcing signals are outside the gradient (docs/method.md section 3)."""
        return torch.linalg.pinv(self.B.detach())

    # ----------------------------------------------------------------- the contract
    def initial_state(self, x0: torch.Tensor) -> torch.Tensor:
        """``h0 = B^+ (x0 - c)``, other blocks 0 (or ``init_map x0``), ``u0 = x0`` if input-fed.

        ``(B, N) -> (B, M)``.
        """
        if x0.ndim != 2 or x0.shape[-1] != self.obs_dim:
            raise ValueError(f"x0 must have shape (B, N) with N = {self.obs_dim}, got {tuple(x0.shape)}")
        h0 = (x0 - self.c.detach()) @ self._pinv().T  # (B, H)
        n_rest = (self.n_blocks - 1) * self.hidden_dim
        if self.init_map is not None:
            a0 = x0 @ self.init_map.T  # (B, (n_blocks-1) H)
        else:
            a0 = x0.new_zeros(x0.shape[0], n_rest)
        return self._pack(x0 if self.input_fed else None, h0, a0)

    def step(self, z: torch.Tensor) -> torch.Tensor:
        u, h, a = self._split(z)
        h_next, a_next = self._cell(h, a, u)
        u_next = self._readout(h_next) if self.input_fed else None
        return self._pack(u_next, h_next, a_next)

    def observe(self, z: torch.Tensor) -> torch.Tensor:
        u, h, _ = self._split(z)
        return u if self.input_fed else self._readout(h)

    def state_from_obs(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Input-fed: ``u <- x``. Autonomous: ``h <- h + B^+ (x - c - B h)``; other blocks kept."""
        u, h, a = self._split(z)
        if self.input_fed:
            return self._pack(x, h, a)
        resid = x - self.c.detach() - h @ self.B.detach().T  # (B, N)
        return self._pack(None, h + resid @ self._pinv().T, a)

    def config(self) -> dict:
        return {"obs_dim": self.obs_dim, "hidden_dim": self.hidden_dim, "input_fed": self.input_fed,
                "learned_init": self.learned_init, "dtype": self.dtype_name}

    def readout_params(self) -> int:
        """Parameters of the readout ``B, c``: ``H N + N``."""
        return self.obs_dim * self.hidden_dim + self.obs_dim


class RNN(RecurrentModel):
    """Vanilla (Elman) tanh RNN as an autonomous map: ``h_n = tanh(W h_{n-1} [+ V u_n] + b)``.

    Parameters: ``W`` (H, H), ``b`` (H,), readout ``B`` (N, H), ``c`` (N,); input-fed adds
    ``V`` (H, N). Count: ``H^2 + H + HN + N`` (+ ``HN`` input-fed). One bias, not PyTorch's two
    (they are redundant). See :class:`RecurrentModel` for the other arguments.
    """

    name = "rnn"
    n_blocks = 1

    def _init_cell(self, gen, dtype):
        H = self.hidden_dim
        self.W = nn.Parameter(self._uniform((H, H), gen, dtype))
        self.b = nn.Parameter(self._uniform((H,), gen, dtype))
        self.V = self._input_weights(1, gen, dtype)

    def _cell(self, h, a, u):
        pre = h @ self.W.T + self.b  # (B, H)
        if u is not None:
            pre = pre + u @ self.V.T
        return torch.tanh(pre), a


class LSTM(RecurrentModel):
    """LSTM as an autonomous map on the packed state ``(h, c)`` (Hochreiter & Schmidhuber 1997).

    ``[i, f, g, o] = W h_{n-1} [+ V u_n] + b``;
    ``c_n = sigmoid(f) c_{n-1} + sigmoid(i) tanh(g)``; ``h_n = sigmoid(o) tanh(c_n)``.

    ``W`` (4H, H), one bias ``b`` (4H,) per gate (PyTorch's second bias is redundant), readout of
    ``h``. Count: ``4H^2 + 4H + HN + N`` (+ ``4HN`` input-fed). Input-fed with H = 35 on the 5-d ECG
    this is ``4*35*(35+5+1) + 35*5 + 5 = 5920``, the GTF paper's count (Hess et al. 2023, Table 1),
    which therefore also had one bias per gate. The memory cell ``c`` is not forced; it starts at 0
    (or a learned linear map of ``x0`` with ``learned_init=True``).
    """

    name = "lstm"
    n_blocks = 2

    def _init_cell(self, gen, dtype):
        H = self.hidden_dim
        self.W = nn.Parameter(self._uniform((4 * H, H), gen, dtype))
        self.b = nn.Parameter(self._uniform((4 * H,), gen, dtype))
        self.V = self._input_weights(4, gen, dtype)

    def _cell(self, h, a, u):
        pre = h @ self.W.T + self.b  # (B, 4H)
        if u is not None:
            pre = pre + u @ self.V.T
        i, f, g, o = pre.chunk(4, dim=-1)  # each (B, H)
        c_next = torch.sigmoid(f) * a + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c_next), c_next


class GRU(RecurrentModel):
    """GRU as an autonomous map (Cho et al. 2014, PyTorch's gate convention).

    ``r = sigmoid(W_r h + b_r)``, ``g = sigmoid(W_g h + b_g)``,
    ``n = tanh(r * (W_n h + b_hn) + b_n)``, ``h_next = (1 - g) n + g h`` (input terms ``V u`` added
    to each pre-activation when input-fed). Biases: one per gate plus the candidate's two (``b_hn``
    sits inside the reset gate, so it is not redundant). Count: ``3H^2 + 4H + HN + N``
    (+ ``3HN`` input-fed).
    """

    name = "gru"
    n_blocks = 1

    def _init_cell(self, gen, dtype):
        H = self.hidden_dim
        self.W = nn.Parameter(self._uniform((3 * H, H), gen, dtype))
        self.b = nn.Parameter(self._uniform((3 * H,), gen, dtype))  # b_r, b_g, b_n
        self.b_hn = nn.Parameter(self._uniform((H,), gen, dtype))
        self.V = self._input_weights(3, gen, dtype)

    def _cell(self, h, a, u):
        H = self.hidden_dim
        rec = h @ self.W.T  # (B, 3H)
        rec_r, rec_g, rec_n = rec.split(H, dim=-1)
        b_r, b_g, b_n = self.b.split(H)
        if u is not None:
            inp_r, inp_g, inp_n = (u @ self.V.T).split(H, dim=-1)
        else:
            inp_r = inp_g = inp_n = 0.0
        r = torch.sigmoid(rec_r + inp_r + b_r)
        g = torch.sigmoid(rec_g + inp_g + b_g)
        n = torch.tanh(r * (rec_n + self.b_hn) + inp_n + b_n)
        return (1.0 - g) * n + g * h, a


__all__ = ["RNN", "LSTM", "GRU", "RecurrentModel"]
