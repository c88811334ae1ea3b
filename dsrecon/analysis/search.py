"""Fixed points and k-cycles of a piecewise-linear model by the heuristic search over linear regions
(SCYFI; Eisenmann, Monfared, Goering, Durstewitz, NeurIPS 2023, Algorithm 1).

One *trial* starts from a sequence of k activation patterns (regions) and repeats, at most
``n_inner`` times: solve the region sequence's k-cycle equation exactly
(:func:`dsrecon.analysis.cycle.solve_region_cycles`); if every solution point lies in the region
assumed for it, it is a k-cycle, kept when new and of minimal period k; otherwise move to the
regions the solution's orbit actually visits and solve again. ``n_outer`` trials are run, each from
a random pattern (each switch on with probability 1/2, as in the paper) or from the regions of a
given start state and its next k-1 iterates (regions the model's own orbit visits, which finds the
cycles that shape an attractor in few moves). A trial ends when it finds a cycle or its ``n_inner``
moves are used up; trials run as one batch, so the cost is a few batched ``M x M`` solves per move.

The search is exact in what it returns (every cycle solves the region equations and lies in its
regions) and heuristic in coverage: it can miss cycles.
:func:`dsrecon.analysis.exhaustive.exhaustive_cycles` checks coverage on small models.
"""

from __future__ import annotations

import numpy as np
import torch

from dsrecon.analysis.cycle import (Cycle, DataUnits, make_cycle, minimal_period, same_cycle,
                                    solve_region_cycles)
from dsrecon.analysis.regions import piecewise_linear_map
from dsrecon.analysis.threads import torch_threads

__all__ = ["find_cycles", "find_fixed_points"]


def find_cycles(model, period: int = 1, *, n_outer: int = 200, n_inner: int = 50, starts=None,
                seed: int = 0, data_mean=None, data_std=None, batch_size: int = 256,
                threads: int | None = 1) -> list[Cycle]:
    """Fixed points (``period=1``) or cycles of minimal period ``period`` of a piecewise-linear model.

    Parameters
    ----------
    model : Model or PiecewiseLinearMap
        A shPLRNN (clipped or not) or any model with a region adapter
        (:func:`dsrecon.analysis.regions.piecewise_linear_map`).
    period : int
        k, the cycle length sought (1: fixed points).
    n_outer : int
        Number of trials (random restarts).
    n_inner : int
        Region moves per trial before it gives up.
    starts : array or tensor, shape ``(S, M)``, optional
        Latent states whose region sequences ``s(z), s(F(z)), .., s(F^{k-1}(z))`` start trials
        (e.g. points of the model's orbit): each distinct sequence once, at most ``n_outer // 2`` of
        them; the other trials start from random patterns.
    seed : int
        Seed of the local generator drawing random patterns.
    data_mean, data_std : array, shape ``(N,)``, optional
        The data's standardization, so each cycle is also given in the data's units.
    batch_size : int
        Trials run side by side.
    threads : int or None
        torch threads during the search (:func:`dsrecon.analysis.threads.torch_threads`; None: as set).

    Returns
    -------
    list of Cycle
        Distinct cycles, stable ones first, then by number of unstable directions.
    """
    for name, value in (("period", period), ("n_outer", n_outer), ("n_inner", n_inner),
                        ("batch_size", batch_size)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    with torch_threads(threads):
        return _search(model, period, n_outer, n_inner, starts, seed, DataUnits(data_mean, data_std), batch_size)


def _search(model, period, n_outer, n_inner, starts, seed, units, batch_size) -> list[Cycle]:
    regions = piecewise_linear_map(model)
    model_for_units = None if model is regions else model
    generator = torch.Generator().manual_seed(int(seed))
    start_patterns = _start_patterns(regions, starts, period, n_outer)
    P = regions.n_switches
    next_start = 0

    def draw(n: int) -> torch.Tensor:
        """The next n trials' initial region sequences, ``(n, k, P)``."""
        nonlocal next_start
        out = []
        if start_patterns is not None and next_start < len(start_patterns):
            out.append(start_patterns[next_start:next_start + n])
        n_random = n - sum(len(o) for o in out)
        if n_random:
            out.append(torch.rand(n_random, period, P, generator=generator).to(regions.device) < 0.5)
        next_start += n
        return torch.cat(out)

    width = min(batch_size, n_outer)
    current = draw(width)  # (W, k, P)
    moves = torch.zeros(width, dtype=torch.long, device=regions.device)
    active = torch.ones(width, dtype=torch.bool, device=regions.device)
    started = width
    cycles: list[Cycle] = []
    while bool(active.any()):
        points, found, consistent, product = solve_region_cycles(regions, current)
        for i in torch.nonzero(consistent & active).flatten().tolist():
            if minimal_period(points[i]) != period:
                continue
            candidate = points[i].cpu().numpy()
            if any(same_cycle(c.latent, candidate) for c in cycles):
                continue
            cycles.append(make_cycle(model_for_units, units, points[i], found[i], product[i]))
        moves += 1
        done = active & (consistent | (moves >= n_inner) | ~torch.isfinite(points).all(dim=-1).all(dim=-1))
        current = torch.where(consistent.reshape(-1, 1, 1), current, found)
        for i in torch.nonzero(done).flatten().tolist():
            if started < n_outer:  # the slot takes the next trial
                current[i] = draw(1)[0]
                moves[i] = 0
                started += 1
            else:
                active[i] = False
    return sorted(cycles, key=lambda c: (c.n_unstable, c.stability != "stable", tuple(c.latent[0])))


def find_fixed_points(model, **kwargs) -> list[Cycle]:
    """Fixed points of a piecewise-linear model: :func:`find_cycles` with ``period=1``."""
    return find_cycles(model, 1, **kwargs)


def _start_patterns(regions, starts, period: int, n_outer: int) -> torch.Tensor | None:
    """Region sequences ``(S, k, P)`` of the given start states and their next k-1 iterates."""
    if starts is None:
        return None
    z = torch.as_tensor(starts, dtype=torch.float64, device=regions.device)
    if z.ndim == 1:
        z = z.unsqueeze(0)
    if z.ndim != 2 or z.shape[1] != regions.dim:
        raise ValueError(f"starts must be latent states of shape (S, M) with M = {regions.dim}, got "
                         f"{tuple(z.shape)}; map observations to states with model.initial_state first")
    if not bool(torch.isfinite(z).all()):
        raise ValueError("starts holds NaN or infinite values")
    sequence = [z]
    for _ in range(period - 1):
        sequence.append(regions.step(sequence[-1]))
    patterns = regions.pattern(torch.stack(sequence, dim=1))  # (S, k, P)
    _, first = np.unique(patterns.flatten(1).cpu().numpy(), axis=0, return_index=True)
    return patterns[np.sort(first)[: n_outer // 2]]  # distinct sequences, in the order given
