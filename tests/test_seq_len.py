"""``seq_len="auto"``: training windows from the data's mutual-information time."""

from __future__ import annotations

import pytest

from dsrecon.preparation import SEQ_LEN_MI_TIMES, SEQ_LEN_RANGE, choose_seq_len


def test_windows_scale_with_the_sampling():
    """Ten times finer sampling: ten times the mutual-information time in samples, ten times the window."""
    coarse, _ = choose_seq_len([8, 9, 8], 100_000, 200)
    fine, _ = choose_seq_len([80, 90, 80], 100_000, 200)
    assert coarse == SEQ_LEN_MI_TIMES * 8 and fine == SEQ_LEN_MI_TIMES * 80


def test_bounds_short_series_and_missing_time_scales():
    low, high = SEQ_LEN_RANGE
    assert choose_seq_len([1], 100_000, 200)[0] == low
    assert choose_seq_len([10_000], 1_000_000, 200)[0] == high
    seq_len, why = choose_seq_len([80], 400, 200)  # a quarter of the training series at most
    assert seq_len == 100 and "kept within" in why
    assert choose_seq_len([None, None], 10_000, 200)[0] == 200
    assert choose_seq_len([], 10_000, 123) == (123, "no mutual-information minimum found: the default 123")


def test_fit_rejects_an_unknown_seq_len_word():
    import numpy as np

    import dsrecon

    with pytest.raises(ValueError, match="'auto'"):
        dsrecon.fit(np.random.default_rng(0).standard_normal((500, 3)), seq_len="long", epochs=1, progress=False,
                    verbose=False, budget=None)
