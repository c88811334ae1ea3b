"""Analysis of a trained piecewise-linear model: fixed points, k-cycles and their stability,
attractors and basins, bifurcation sweeps.

* :mod:`~dsrecon.analysis.regions`: linear regions (activation patterns and their affine maps);
  the adapter a piecewise-linear model provides (shPLRNN built in).
* :mod:`~dsrecon.analysis.cycle`: a fixed point or cycle with eigenvalues and type, in latent and
  data units; the exact solve of one region sequence.
* :mod:`~dsrecon.analysis.search`: the heuristic search over regions (SCYFI; Eisenmann et al.,
  NeurIPS 2023).
* :mod:`~dsrecon.analysis.exhaustive`: every region and every cycle in them, for small models.
* :mod:`~dsrecon.analysis.basins`: attractors from many initial conditions, basin maps.
* :mod:`~dsrecon.analysis.bifurcation`: cycles and lambda_max along one parameter.
"""

from dsrecon.analysis.basins import Attractor, AttractorReport, BasinMap, basin_map, find_attractors
from dsrecon.analysis.bifurcation import BifurcationSweep, bifurcation_sweep
from dsrecon.analysis.cycle import Cycle, DataUnits
from dsrecon.analysis.exhaustive import all_patterns, exhaustive_cycles, occupied_patterns
from dsrecon.analysis.regions import PiecewiseLinearMap, ShPLRNNRegions, piecewise_linear_map, register_regions
from dsrecon.analysis.search import find_cycles, find_fixed_points

__all__ = [
    "Attractor", "AttractorReport", "BasinMap", "basin_map", "find_attractors",
    "BifurcationSweep", "bifurcation_sweep",
    "Cycle", "DataUnits",
    "all_patterns", "exhaustive_cycles", "occupied_patterns",
    "PiecewiseLinearMap", "ShPLRNNRegions", "piecewise_linear_map", "register_regions",
    "find_cycles", "find_fixed_points",
]
