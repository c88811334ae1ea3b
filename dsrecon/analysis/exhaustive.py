"""Exhaustive enumeration of linear regions and of every fixed point and k-cycle in them: the
reference that the heuristic search (:mod:`dsrecon.analysis.search`) is checked against.

Two enumerations of region patterns:

* :func:`all_patterns`: every ``s`` in ``{0, 1}^P`` (``2^P`` patterns; most are empty regions
  in low dimension, which is harmless: a solution is only kept when it lies in its region).
* :func:`occupied_patterns`: exactly the non-empty cells of the switching-hyperplane arrangement
  (up to measure-zero coincidences), found from its vertices. Every non-empty cell
  ``{z : sign(G z + b) = s}`` is a polyhedron whose constraint normals ``G`` span R^M, so its closure
  has a vertex, the intersection of M of the hyperplanes; around that vertex the cell's pattern has
  the vertex's signs on the other hyperplanes and some sign on each of the M through it. Listing all
  ``C(P, M) 2^M`` such patterns therefore lists every cell. (When ``G`` has rank r < M the same is
  done in its r-dimensional row space.) Where more than M hyperplanes meet in one vertex (the
  clipped shPLRNN's L switches ``W2_i z = 0`` all pass through the origin), not every sign choice
  is a cell: only those that a direction ``d`` from the vertex realizes
  (``s_i g_i . d > 0`` for the hyperplanes through the vertex): those are the cells of the central
  arrangement there, found by the same enumeration one dimension lower.

A k-cycle visits k regions, so ``exhaustive_cycles`` solves every k-tuple of patterns: with the
occupied cells this is feasible for small models (e.g. M = 2, clipped L = 10: ~200 cells,
~40,000 pairs for 2-cycles).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch

from dsrecon.analysis.cycle import (Cycle, DataUnits, make_cycle, minimal_period, same_cycle,
                                    solve_region_cycles)
from dsrecon.analysis.regions import piecewise_linear_map
from dsrecon.analysis.threads import torch_threads

__all__ = ["all_patterns", "occupied_patterns", "exhaustive_cycles"]

# a switch's value at a vertex below this (relative) counts as zero: the vertex lies on it too
_ON_HYPERPLANE = 1e-9


def all_patterns(model, max_patterns: int = 2 ** 20) -> torch.Tensor:
    """Every pattern in ``{0, 1}^P``, ``(2^P, P)`` bool.

    Raises
    ------
    ValueError
        If ``2^P > max_patterns``; use :func:`occupied_patterns` for wider models.
    """
    regions = piecewise_linear_map(model)
    P = regions.n_switches
    if 2 ** P > max_patterns:
        raise ValueError(f"2^P = 2^{P} patterns exceed max_patterns = {max_patterns}; use occupied_patterns "
                         "(the non-empty regions only) or raise max_patterns")
    codes = torch.arange(2 ** P, device=regions.device)
    return ((codes.unsqueeze(1) >> torch.arange(P, device=regions.device)) & 1).bool()  # (2^P, P)


def occupied_patterns(model, max_vertices: int = 2_000_000, seed: int = 0) -> torch.Tensor:
    """The patterns of all non-empty linear regions, ``(R, P)`` bool, by the vertex enumeration
    described in the module docstring.

    Parameters
    ----------
    model : Model or PiecewiseLinearMap
    max_vertices : int
        Refuse when ``C(P, r)`` (r = rank of the switch normals) exceeds this.
    seed : int
        Seed of the random slicing direction at vertices where more than r hyperplanes meet.
    """
    regions = piecewise_linear_map(model)
    G = regions.switch_normals.cpu().numpy()  # (P, M)
    b = regions.switch_offsets.cpu().numpy()  # (P,)
    P = G.shape[0]
    if P == 0:
        return torch.zeros(1, 0, dtype=torch.bool, device=regions.device)
    # work in the row space of G: the pattern depends on z only through its projection there
    _, sv, Vh = np.linalg.svd(G, full_matrices=False)
    r = int((sv > sv[0] * 1e-10).sum())
    n_subsets = math.comb(P, r)
    if n_subsets > max_vertices:
        raise ValueError(f"C(P={P}, {r}) = {n_subsets} candidate vertices exceed max_vertices = {max_vertices}; "
                         "the exhaustive enumeration is meant for small models")
    cells = _arrangement_cells(G @ Vh[:r].T, b, np.random.default_rng(seed))
    return torch.as_tensor(cells, device=regions.device)


def _arrangement_cells(G: np.ndarray, b: np.ndarray, rng) -> np.ndarray:
    """Sign patterns ``G z + b > 0`` of every cell of an arrangement whose normals ``G (P, r)`` span
    R^r, ``(S, P)`` bool. Around a vertex where n > r hyperplanes meet, the local cells are those
    of the central arrangement of the n, found by the same method on the two slices ``u . d = +-1``
    (a random u): each of its cells is a pointed cone that meets at least one of them."""
    P, r = G.shape
    if r == 0:
        return (b > 0)[None]
    subsets = np.array(list(itertools.combinations(range(P), r)))  # (C, r)
    A = G[subsets]  # (C, r, r)
    ok = np.linalg.cond(A) < 1e12
    vertex = np.linalg.solve(A[ok], -b[subsets[ok]][..., None])[..., 0]  # (V, r)
    values = vertex @ G.T + b  # (V, P)
    scale = np.abs(G).sum(axis=1) * (1 + np.abs(vertex).max(axis=1, keepdims=True)) + np.abs(b)  # (V, P)
    on = np.abs(values) <= _ON_HYPERPLANE * scale  # (V, P): the hyperplanes through each vertex
    _, first = np.unique(on, axis=0, return_index=True)  # one row per distinct vertex
    found = []
    for v in first:
        through = np.nonzero(on[v])[0]
        if len(through) == r:
            local = np.array(list(itertools.product((False, True), repeat=r)), dtype=bool).reshape(-1, r)
        else:
            u = rng.standard_normal(r)
            Q = np.linalg.svd(u[None], full_matrices=True)[2][1:].T  # (r, r-1): a basis of u's complement
            Gs, bs = G[through] @ Q, G[through] @ u / (u @ u)
            local = np.unique(np.concatenate([_arrangement_cells(Gs, bs, rng),
                                              _arrangement_cells(Gs, -bs, rng)]), axis=0)
        base = np.repeat((values[v] > 0)[None], len(local), axis=0)  # (S, P)
        base[:, through] = local
        found.append(base)
    return np.unique(np.concatenate(found), axis=0)


def exhaustive_cycles(model, period: int = 1, *, patterns=None, data_mean=None, data_std=None,
                      max_combinations: int = 5_000_000, chunk: int = 65_536,
                      threads: int | None = 1) -> list[Cycle]:
    """Every fixed point or cycle of minimal period ``period`` whose points lie in the given regions.

    Parameters
    ----------
    model : Model or PiecewiseLinearMap
    period : int
        k; every k-tuple of ``patterns`` is solved (``R^k`` solves).
    patterns : torch.Tensor, bool, shape ``(R, P)``, optional
        The regions to search (default: :func:`occupied_patterns`, i.e. all of state space).
    data_mean, data_std : array, shape ``(N,)``, optional
        The data's standardization, for the cycles' data units.
    max_combinations : int
        Refuse when ``R^k`` exceeds this.
    chunk : int
        Region tuples solved per batch.
    threads : int or None
        torch threads (:func:`dsrecon.analysis.threads.torch_threads`).

    Returns
    -------
    list of Cycle
        In the order of :func:`dsrecon.analysis.search.find_cycles`.
    """
    if not isinstance(period, int) or isinstance(period, bool) or period < 1:
        raise ValueError(f"period must be a positive integer, got {period!r}")
    regions = piecewise_linear_map(model)
    units = DataUnits(data_mean, data_std)
    with torch_threads(threads):
        if patterns is None:
            patterns = occupied_patterns(regions)
        patterns = torch.as_tensor(patterns, device=regions.device).bool()
        R = patterns.shape[0]
        if R ** period > max_combinations:
            raise ValueError(f"{R} regions give {R}^{period} = {R ** period} region sequences, more than "
                             f"max_combinations = {max_combinations}; use find_cycles for this model")
        cycles: list[Cycle] = []
        total = R ** period
        for start in range(0, total, chunk):
            codes = torch.arange(start, min(start + chunk, total), device=regions.device)
            digits = torch.stack([(codes // R ** t) % R for t in range(period)], dim=1)  # (B, k)
            points, found, consistent, product = solve_region_cycles(regions, patterns[digits])
            for i in torch.nonzero(consistent).flatten().tolist():
                if minimal_period(points[i]) != period:
                    continue
                if any(same_cycle(c.latent, points[i].cpu().numpy()) for c in cycles):
                    continue
                cycles.append(make_cycle(None if model is regions else model, units, points[i], found[i],
                                         product[i]))
    return sorted(cycles, key=lambda c: (c.n_unstable, c.stability != "stable", tuple(c.latent[0])))
