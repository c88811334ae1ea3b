"""Long Expressive Memory (LEM; Rusch, Mishra, Erichson, Mahoney, ICLR 2022) as a DSR model.

LEM discretizes a multiscale ODE system with an implicit-explicit step. Run without input it is an
autonomous map on the packed state ``s = (y, z)`` of size 2H (docs/method.md section 2.1)::

    dt_n  = dt * sigmoid(W1 y_{n-1} + b1)                      gate of z
    dtb_n = dt * sigmoid(W2 y_{n-1} + b2)                      gate of y
    z_n   = (1 - dt_n)  * z_{n-1} + dt_n  * tanh(Wz y_{n-1} + bz)
    y_n   = (1 - dtb_n) * y_{n-1} + dtb_n * tanh(Wy z_n + by)  (reads the new z_n)
    x_hat = B y_n + c

Mapping to the official code (github.com/tk-rusch/LEM, ``LEMCell.forward(x, y, z)``): ``y`` is
their ``y``, the state the classifier reads, and ``z`` is their ``z``. Their ``hid2hid = Linear(H,
3H)`` holds ``(W2, W1, Wz)`` with biases (chunks ``h_dt1 -> ms_dt_bar``, the gate of y, ``h_dt2 ->
ms_dt``, the gate of z, ``h_y``, the candidate of z, despite its name); their ``transform_z =
Linear(H, H)`` is ``Wy, by`` (candidate of y from the new z); their ``inp2hid = Linear(N, 4H)``
holds the input matrices ``V2, V1, Vy, Vz`` (chunk ``i_z`` enters the y update, ``i_y`` the z
update) with four more biases. So two gates (one per state) and the z update first, y second.

With ``0 < dt <= 1`` every update is a convex combination of the old value and a tanh, so a state
that starts in ``[-1, 1]`` stays there; the paper's bounded-state and bounded-gradient results rest
on this, hence ``dt > 1`` is rejected. A chaotic LEM still has exploding gradients over long
free-running windows (Mikhaeil et al. 2022), which is why it is trained with GTF here.

Parameter count: ``4H^2 + 4H`` for the cell plus the readout ``HN + N``. Input-fed
(``input_fed=True``) adds ``V`` (4H, N) and, as ``inp2hid`` in the official code, its own bias
(4H; redundant with ``b`` but kept so counts match): ``4H^2 + 4HN + 8H + HN + N``. For H = 31 on the
5-d ECG that is 3844 + 620 + 248 + 160 = 4872, the GTF paper's count (Hess et al. 2023, Table 1).
"""

from __future__ import annotations

import torch
from torch import nn

from dsrecon.models.baselines import RecurrentModel


class LEM(RecurrentModel):
    """Long Expressive Memory as an autonomous one-step map with an affine readout of ``y``.

    Parameters
    ----------
    obs_dim : int
        N, observed dimension.
    hidden_dim : int
        H; the state has 2H coordinates ``(y, z)`` (plus N for ``u`` when input-fed).
    dt : float
        Fixed time-step scale of the gates, ``0 < dt <= 1`` (default 1.0, as the paper's code).
    input_fed : bool
        Carry the last observation estimate ``u`` in the state and feed it to the cell through
        ``V`` (4H, N) plus bias (docs/method.md section 2, "Input-fed variant"); ``observe`` returns ``u`` and
        forcing sets ``u``.
    learned_z0 : bool
        Initial ``z0`` from a learned linear map of ``x0`` (zero-initialized) instead of 0.
    generator, seed
        Initialization randomness (a ``torch.Generator``, or a seed for a new one; neither means
        seed 0: :func:`dsrecon.models.base.resolve_generator`).
    dtype : torch.dtype or str
        Parameter dtype.

    Notes
    -----
    Forcing (autonomous): ``y_hat = y + B^+ (x - c - B y)`` with ``B^+`` detached; ``z`` is never
    forced. Initial state: ``y0 = B^+ (x0 - c)``, ``z0 = 0``. Note ``y0`` need not lie in
    ``[-1, 1]``; the updates then pull it back geometrically (``|y_n| <= max(1, |y_{n-1}|)``).
    Initialization: every cell weight and bias ``U(-1/sqrt(H), 1/sqrt(H))``, readout ``B``
    Kaiming-normal (std ``sqrt(2 / H)``) and ``c`` ``U(-1/sqrt(H), 1/sqrt(H))`` as the official
    ``classifier``. No regularizer (``regularization() = 0``): the paper trains LEM without one.
    Jacobian: ``torch.func`` autograd (base class), checked against finite differences in tests.

    References
    ----------
    Rusch, Mishra, Erichson, Mahoney. Long Expressive Memory for Sequence Modeling. ICLR 2022.
    """

    name = "lem"
    n_blocks = 2

    def __init__(self, obs_dim: int, hidden_dim: int, *, dt: float = 1.0, input_fed: bool = False,
                 learned_z0: bool = False, generator: torch.Generator | None = None,
                 seed: int | None = None, dtype=torch.float32):
        if isinstance(dt, bool) or not isinstance(dt, (int, float)) or not 0.0 < float(dt) <= 1.0:
            raise ValueError(f"dt must satisfy 0 < dt <= 1 (the bounded-state property needs dt <= 1), "
                             f"got dt = {dt!r}")
        self.dt = float(dt)
        super().__init__(obs_dim, hidden_dim, input_fed=input_fed, learned_init=learned_z0,
                         generator=generator, seed=seed, dtype=dtype)

    def _init_cell(self, gen, dtype):
        H = self.hidden_dim
        # W = [W1; W2; Wz] acting on y: gate of z, gate of y, candidate of z
        self.W = nn.Parameter(self._uniform((3 * H, H), gen, dtype))
        self.b = nn.Parameter(self._uniform((3 * H,), gen, dtype))
        # Wy acting on the new z: candidate of y
        self.Wy = nn.Parameter(self._uniform((H, H), gen, dtype))
        self.by = nn.Parameter(self._uniform((H,), gen, dtype))
        # input-fed: V = [V1; V2; Vz; Vy] (4H, N) and bias, as the official inp2hid
        self.V = self._input_weights(4, gen, dtype)
        self.bv = nn.Parameter(self._uniform((4 * H,), gen, dtype)) if self.input_fed else None

    def _cell(self, y, z, u):
        H = self.hidden_dim
        pre = y @ self.W.T + self.b  # (B, 3H)
        pre_1, pre_2, pre_z = pre.split(H, dim=-1)
        inp_y = 0.0
        if u is not None:
            inp_1, inp_2, inp_z, inp_y = (u @ self.V.T + self.bv).split(H, dim=-1)  # each (B, H)
            pre_1, pre_2, pre_z = pre_1 + inp_1, pre_2 + inp_2, pre_z + inp_z
        dt_n = self.dt * torch.sigmoid(pre_1)  # (B, H) gate of z
        dtb_n = self.dt * torch.sigmoid(pre_2)  # (B, H) gate of y
        z_next = (1.0 - dt_n) * z + dt_n * torch.tanh(pre_z)
        y_next = (1.0 - dtb_n) * y + dtb_n * torch.tanh(z_next @ self.Wy.T + self.by + inp_y)
        return y_next, z_next

    def config(self) -> dict:
        return {"obs_dim": self.obs_dim, "hidden_dim": self.hidden_dim, "dt": self.dt,
                "input_fed": self.input_fed, "learned_z0": self.learned_init, "dtype": self.dtype_name}


__all__ = ["LEM"]
