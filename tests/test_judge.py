"""The forecaster judged against volatility (models.judge) and volatility-scaled barriers
(features.volatility_barriers): each checked against an independent computation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from algotrading import features
from algotrading.models import judge


def bars(n: int = 400, seed: int = 5) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    vol = np.where(np.arange(n) < n // 2, 0.005, 0.02)  # a calm half, then a wild one
    close = 100 * np.exp(np.cumsum(vol * rng.standard_normal(n)))
    open_ = np.r_[close[0], close[:-1]]
    spread = close * vol * np.abs(rng.standard_normal(n))
    return pd.DataFrame({"open": open_, "high": np.maximum(open_, close) + spread,
                         "low": np.minimum(open_, close) - spread, "close": close},
                        index=pd.bdate_range("2010-01-04", periods=n))


def test_auc_equals_sklearn_with_ties():
    rng = np.random.default_rng(0)
    y = (rng.random(300) < 0.3).astype(float)
    score = np.round(rng.random(300) + 0.3 * y, 1)  # many ties
    assert judge.auc(y, score) == pytest.approx(roc_auc_score(y, score), abs=1e-12)
    assert np.isnan(judge.auc(np.ones(5), np.arange(5.0)))


def test_direction_auc_looks_only_at_bars_where_one_side_wins():
    y = np.array([[1, 0], [0, 1], [1, 1], [0, 0], [1, 0], [0, 1]], float)
    right = np.array([[0.9, 0.1], [0.2, 0.8], [0.0, 0.9], [0.9, 0.0], [0.6, 0.5], [0.3, 0.4]])
    assert judge.direction_auc(y, right) == 1.0  # rows 2 and 3 (both or neither) are ignored
    assert judge.direction_auc(y, right[:, ::-1]) == 0.0


def test_volatility_scores_use_past_bars_only():
    prices = bars()
    scores = judge.volatility_scores(prices)
    t = 250
    c, h, lo = (prices[k].to_numpy() for k in ("close", "high", "low"))
    tr = [max(h[i] - lo[i], abs(h[i] - c[i - 1]), abs(lo[i] - c[i - 1])) for i in range(t - 13, t + 1)]
    assert scores["atr_close"][t, 0] == pytest.approx(np.mean(tr) / c[t])
    assert scores["realised_vol"][t, 1] == pytest.approx(np.std(c[t - 4:t + 1] / c[t - 5:t] - 1, ddof=1))
    assert scores["momentum"][t, 0] == np.sign(c[t] / c[t - 20] - 1) == -scores["momentum"][t, 1]
    later = prices.copy()
    later.iloc[t + 1:] *= 3  # the future changes; bar t's scores do not
    assert all(judge.volatility_scores(later)[k][t] == pytest.approx(v[t]) for k, v in scores.items())


def test_table_intervals_and_verdict():
    rng = np.random.default_rng(1)
    n = 600
    y = (rng.random((n, 2)) < 0.3).astype(float)
    probs = {"network": rng.random((n, 2)), "oracle": y + 0.01 * rng.random((n, 2))}
    tab = judge.table(y, probs, resamples=200)
    assert tab.loc[("oracle", "long"), "auc"] == 1.0 and tab.loc[("network", "long"), "diff"] == 0
    for _, r in tab.iterrows():
        assert r["low"] <= r["auc"] <= r["high"]
    assert tab.loc[("oracle", "short"), "diff_low"] > 0.3
    text = judge.verdict(tab)
    assert "ranked better by oracle" in text and "no better than a coin" in text


def test_volatility_barriers_scale_with_recent_volatility():
    prices = bars()
    target, stop = features.volatility_barriers(prices, horizon=5, target=1.0, stop=0.75, window=20)
    t = 300
    sigma = np.std(np.diff(np.log(prices["close"].to_numpy()[t - 20:t + 1])), ddof=1)
    assert target[t] == pytest.approx(sigma * np.sqrt(5))
    assert stop[t] == pytest.approx(0.75 * sigma * np.sqrt(5))
    assert target[300] > 2 * target[150]  # the wild half asks for a larger move
    # per-bar barriers give, bar by bar, the label that bar's own fixed barrier gives
    scaled = features.labels(prices, 5, target, stop)
    for t in (30, 150, 300):
        fixed = features.labels(prices, 5, float(target[t]), float(stop[t]))
        assert scaled.iloc[t].equals(fixed.iloc[t])
    with pytest.raises(ValueError, match="mode='barrier'"):
        features.labels(prices, 5, target, stop, mode="workshop")
