"""breakout.channel (blocks of running extremes) against the plain window-by-window max and min."""

from __future__ import annotations

import numpy as np
import pytest

from algotrading.strategies import breakout


@pytest.mark.parametrize("n", [1, 2, 7, 60, 257])
def test_channel_is_the_max_and_min_of_the_bars_before(n):
    rng = np.random.default_rng(n)
    close = np.round(rng.uniform(10, 20, n), 0)  # whole numbers: repeated extremes
    if n > 5:
        close[n // 2] = np.nan  # a window holding a NaN has a NaN extreme
    for period in (1, 2, 3, 5, n - 1, n, n + 3):
        if period < 1:
            continue
        high, low = breakout.channel(close, period)
        want_high, want_low = np.full(n, np.nan), np.full(n, np.nan)
        for t in range(period, n):
            window = close[t - period:t].tolist()
            has_nan = any(v != v for v in window)
            want_high[t] = np.nan if has_nan else max(window)
            want_low[t] = np.nan if has_nan else min(window)
        np.testing.assert_array_equal(high, want_high)
        np.testing.assert_array_equal(low, want_low)
