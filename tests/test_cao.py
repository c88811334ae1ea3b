"""Cao's (1997) embedding dimension and the embedding rule of ``dsrecon.preparation``.

Expected dimensions: a sine is a closed curve, embeddable in 2 dimensions; the Lorenz-63 and
Rossler attractors (fractal dimension about 2.06 and 2.01) unfold in 3 delay coordinates from one
variable, the value Cao's paper and the FNN literature report; the Santa Fe laser series is
usually embedded in 3-6 dimensions, and the GTF paper embedded its ECG lead in 5 (PECUZAL).
"""

from __future__ import annotations

import numpy as np
import pytest

import dsrecon
from dsrecon.cao import cao_embedding_dim, cao_statistics
from dsrecon.preparation import choose_embedding


def _z(x):
    return (x - x.mean()) / x.std()


@pytest.fixture(scope="module")
def lorenz_x():
    """x of Lorenz-63, 100 time units at dt = 0.01 (fixed-step RK4: the dimension is a property
    of the attractor, not of the last digits of one orbit)."""
    return _z(dsrecon.simulate("lorenz63", 10_000, method="rk4", cache=False, progress=False).x[:, 0])


@pytest.fixture(scope="module")
def rossler_x():
    """x of Rossler, 500 time units at dt = 0.05."""
    return _z(dsrecon.simulate("rossler", 10_000, method="rk4", cache=False, progress=False).x[:, 0])


def test_cao_on_lorenz_x_gives_3(lorenz_x):
    result = cao_embedding_dim(lorenz_x, delay=17, max_dim=6)
    assert result.dimension == 3 and result.saturated and not result.looks_like_noise
    assert result.e1[0] < 0.5 and result.e1[2] > 0.9  # false neighbours in 1-d, unfolded in 3-d


def test_cao_on_a_sine_gives_2():
    x = np.sin(2 * np.pi * np.arange(10_000) / 64.7)  # period 64.7 samples: repeats every 647 up to rounding
    assert choose_embedding(x[:, None], max_dim=6).delays == (0, 16)
    assert cao_embedding_dim(x, delay=16, max_dim=6).dimension == 2


def test_cao_flags_white_noise():
    """E2 = 1 for every dimension when the future is independent of the neighbour relation."""
    noise = np.random.default_rng(0).standard_normal(5_000)
    e1, e2 = cao_statistics(noise, delay=1, max_dim=5)
    assert np.all(np.abs(e2 - 1) < 0.1)
    assert cao_embedding_dim(noise, 1, max_dim=5).looks_like_noise


def test_noisy_rossler_x_embeds_in_3(rossler_x):
    """5 % observation noise (the GTF paper's level): plain Cao creeps towards 1 and answers 6-7;
    the noise floor of choose_embedding restores 3."""
    x = rossler_x + 0.05 * np.random.default_rng(1).standard_normal(len(rossler_x))
    emb = choose_embedding(x[:, None], max_dim=6)
    assert emb.dimension == 3 and len(emb.delays) == 3
    assert 20 <= emb.delays[1] <= 32  # MI minimum of Rossler x at dt = 0.05: about a quarter period (~30)


def test_lorenz_x_embeds_in_3_to_4_and_two_channels_get_half(lorenz_x):
    emb = choose_embedding(lorenz_x[:, None], max_dim=6)
    assert 3 <= emb.dimension <= 4 and emb.delays[:2] == (0, 17)
    two = np.stack([lorenz_x, np.roll(lorenz_x, 5)], axis=1)  # N = 2 < 3: embedded, ceil(3 / 2) = 2 delays each
    assert len(choose_embedding(two, max_dim=6).delays) == 2
    three = np.stack([lorenz_x] * 3, axis=1)
    assert choose_embedding(three).delays == (0,)  # N >= 3: used as observed


def test_embed_modes():
    from dsrecon.preparation import parse_embed

    x = np.sin(np.arange(500) / 5.0)[:, None]
    assert choose_embedding(x, "none").delays == (0,)
    emb = choose_embedding(x, parse_embed("4:7"))
    assert emb.delays == (0, 7, 14, 21) and emb.dimension == 4
    with pytest.raises(ValueError, match="D:TAU with integers"):
        parse_embed("3")


def test_santafe_laser_embeds_in_3_to_6():
    pytest.importorskip("reservoirpy")
    laser = dsrecon.load("santafe").x[:, 0]
    emb = choose_embedding(_z(laser)[:, None])
    assert 3 <= emb.dimension <= 6, emb.reason


@pytest.mark.slow
def test_gtf_ecg_lead_embeds_in_3_to_6(gtf_data_dir):
    """The raw (z-scored) lead of the GTF paper's ECG, 700 Hz: the paper embedded it in 5."""
    path = gtf_data_dir / "ECG_pecuzal_5d_train.npy"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    lead = np.load(path)[:, 0]
    emb = choose_embedding(lead[:, None])
    assert 3 <= emb.dimension <= 6, emb.reason
