"""Linear regions of a piecewise-linear map: the activation pattern of a state and the affine map
of a region.

A ReLU-based recurrent map ``F`` (shPLRNN, clipped or not; ALRNN) is affine on each cell of an
arrangement of hyperplanes, the *switching* hyperplanes ``g_j . z + b_j = 0`` (j = 1..P) where one
ReLU changes slope. The *activation pattern* of a state is ``s = 1[G z + b > 0]`` in ``{0, 1}^P``,
and on the region of pattern ``s``::

    F(z) = J(s) z + c(s)

Everything in :mod:`dsrecon.analysis` (the cycle search, the exhaustive check) is written against
this description, so a new piecewise-linear model needs only a small adapter that gives ``G``,
``b`` and ``J(s)``, ``c(s)``, registered in :func:`piecewise_linear_map`.

Reference: Eisenmann, Monfared, Goering, Durstewitz. Bifurcations and loss jumps in RNN training.
NeurIPS 2023 (section 3: PLRNNs are affine in each of their linear subregions, which makes fixed
points and cycles solvable exactly).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from dsrecon.models.base import Model

__all__ = ["ALRNNRegions", "PiecewiseLinearMap", "ShPLRNNRegions", "piecewise_linear_map", "register_regions"]


class PiecewiseLinearMap(ABC):
    """A map ``F: R^M -> R^M`` that is affine on the cells of P switching hyperplanes.

    Attributes
    ----------
    switch_normals : torch.Tensor, shape ``(P, M)``
        ``G``, one row per switching hyperplane.
    switch_offsets : torch.Tensor, shape ``(P,)``
        ``b``; the pattern of ``z`` is ``G z + b > 0``.

    Subclasses give :meth:`affine`. All tensors are float64 (exact region tests need it) on the
    model's device.
    """

    switch_normals: torch.Tensor
    switch_offsets: torch.Tensor

    @property
    def dim(self) -> int:
        """M, the state dimension."""
        return self.switch_normals.shape[1]

    @property
    def n_switches(self) -> int:
        """P, the number of switching hyperplanes (pattern length)."""
        return self.switch_normals.shape[0]

    @property
    def device(self) -> torch.device:
        return self.switch_normals.device

    def pattern(self, z: torch.Tensor) -> torch.Tensor:
        """Activation pattern ``G z + b > 0``, ``(..., M) -> (..., P)`` bool."""
        return z.to(self.switch_normals) @ self.switch_normals.T + self.switch_offsets > 0

    @abstractmethod
    def affine(self, patterns: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The affine maps of regions: ``(S, P)`` bool patterns -> ``J (S, M, M)``, ``c (S, M)``."""

    def step(self, z: torch.Tensor) -> torch.Tensor:
        """``F(z) = J(s(z)) z + c(s(z))``, ``(S, M) -> (S, M)`` float64 (equals the model's step)."""
        z = z.to(self.switch_normals)
        J, c = self.affine(self.pattern(z))
        return (J @ z.unsqueeze(-1)).squeeze(-1) + c  # (S, M)


class ShPLRNNRegions(PiecewiseLinearMap):
    r"""Linear regions of the shPLRNN (:class:`dsrecon.models.plrnn.ShPLRNN`).

    Unclipped, ``z' = A z + W1 relu(W2 z + h2) + h1``: P = L switches ``W2 z + h2 > 0`` (pattern
    ``d``), and ``J = diag(A) + W1 diag(d) W2``, ``c = h1 + W1 (d * h2)``.

    Clipped, ``z' = A z + W1 [relu(W2 z + h2) - relu(W2 z)] + h1``: P = 2L switches, ``d`` as
    above and ``e = 1[W2 z > 0]`` (pattern ``(d, e)``); then ``relu(u + h2) - relu(u) =
    (d - e) u + d h2`` with ``u = W2 z``, so ``J = diag(A) + W1 diag(d - e) W2``,
    ``c = h1 + W1 (d * h2)``. Of the four ``(d_i, e_i)`` of one unit only three are realisable
    (``e_i = 1`` forces ``d_i = 1`` when ``h2_i > 0``, and conversely), so the occupied regions
    number at most ``3^L``.
    """

    def __init__(self, model: Model):
        params = {k: getattr(model, k).detach().to(torch.float64) for k in ("A", "W1", "W2", "h1", "h2")}
        self.A, self.W1, self.W2, self.h1, self.h2 = (params[k] for k in ("A", "W1", "W2", "h1", "h2"))
        self.clipped = bool(model.clipped)
        if self.clipped:
            self.switch_normals = torch.cat([self.W2, self.W2])  # (2L, M)
            self.switch_offsets = torch.cat([self.h2, torch.zeros_like(self.h2)])  # (2L,)
        else:
            self.switch_normals, self.switch_offsets = self.W2, self.h2  # (L, M), (L,)
        M = self.A.shape[0]
        # row l: the outer product W1[:, l] W2[l, :], flattened, so that the Jacobians of S patterns
        # are one (S, L) @ (L, M*M) product
        self._rank_one = (self.W1.T.unsqueeze(-1) * self.W2.unsqueeze(1)).reshape(-1, M * M)  # (L, M*M)

    def affine(self, patterns: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        L = self.W2.shape[0]
        p = patterns.to(self.W2)  # (S, P)
        d = p[:, :L]  # (S, L)
        slope = d - p[:, L:] if self.clipped else d  # (S, L)
        M = self.A.shape[0]
        J = (slope @ self._rank_one).reshape(-1, M, M) + torch.diag(self.A)  # (S, M, M)
        c = (d * self.h2) @ self.W1.T + self.h1  # (S, M)
        return J, c


class ALRNNRegions(PiecewiseLinearMap):
    r"""Linear regions of the ALRNN (:class:`dsrecon.models.alrnn.ALRNN`).

    ``z' = A z + W phi(z) + h`` with ``phi`` the identity on the first ``M - P`` units and a ReLU
    on the last P: P switches ``z_i > 0`` (i = M-P+1..M, pattern ``s``), and with
    ``D = diag(1, .., 1, s)``, ``J = diag(A) + W D``, ``c = h`` (Brenner et al., NeurIPS 2024: at
    most ``2^P`` regions, the pattern is the model's symbolic code).
    """

    def __init__(self, model: Model):
        self.A, self.W, self.h = (getattr(model, k).detach().to(torch.float64) for k in ("A", "W", "h"))
        M, P = self.A.shape[0], int(model.n_relu)
        eye = torch.eye(M, dtype=torch.float64, device=self.A.device)
        self.switch_normals = eye[M - P:]  # (P, M)
        self.switch_offsets = torch.zeros(P, dtype=torch.float64, device=self.A.device)  # (P,)

    def affine(self, patterns: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        M, P = self.A.shape[0], self.n_switches
        slope = torch.ones(patterns.shape[0], M, dtype=torch.float64, device=self.A.device)  # (S, M)
        slope[:, M - P:] = patterns.to(slope)
        J = self.W * slope.unsqueeze(-2) + torch.diag(self.A)  # column j scaled by slope_j: (S, M, M)
        return J, self.h.expand(patterns.shape[0], M)  # (S, M, M), (S, M)


# model name -> adapter class; an adapter takes the model and is a PiecewiseLinearMap
_REGIONS: dict[str, type] = {"shplrnn": ShPLRNNRegions, "alrnn": ALRNNRegions}


def register_regions(model_name: str, adapter: type) -> None:
    """Make :func:`piecewise_linear_map` accept models whose ``name`` is ``model_name``.

    ``adapter(model)`` must return a :class:`PiecewiseLinearMap` (e.g. an ALRNN's: switches
    ``z_i > 0`` on its last P coordinates, ``J = diag(A) + W diag(1, .., 1, s)``, ``c = h``).
    """
    if not (isinstance(adapter, type) and issubclass(adapter, PiecewiseLinearMap)):
        raise TypeError(f"adapter must be a PiecewiseLinearMap subclass, got {adapter!r}")
    _REGIONS[model_name] = adapter


def piecewise_linear_map(model) -> PiecewiseLinearMap:
    """The linear-region description of a piecewise-linear model (or pass one through).

    Raises
    ------
    ValueError
        For a model that is not piecewise linear (LEM, RNN, LSTM, GRU), listing the valid ones.
    """
    if isinstance(model, PiecewiseLinearMap):
        return model
    name = getattr(model, "name", type(model).__name__)
    if name not in _REGIONS:
        raise ValueError(f"the region analysis needs a piecewise-linear model; got {name!r}, valid: "
                         f"{', '.join(sorted(_REGIONS))} (register others with register_regions)")
    return _REGIONS[name](model)
