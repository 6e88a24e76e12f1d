"""Is the forecaster's ranking more than volatility? Scores the network beside rules a reader
could write in one line, with intervals that respect the order of the bars.

- Volatility-only scores: the 14-day ATR over the close and the 5-day realised volatility,
  the same number for both outputs (a wild bar reaches a fixed target, and a fixed stop, more
  often either way), and the sign of the 20-day return (momentum: long if up, short if down).
  They are not fitted; only their ranking (ROC-AUC) is compared.
- Direction only: on the bars where exactly one side wins, does p_long - p_short say which? A
  volatility score cannot, so this is the network's own claim to skill.
- Block-bootstrap intervals: test rows resampled in circular blocks of `BLOCK` bars (labels
  overlap over the horizon and volatility clusters, so single rows are not independent), the
  same draw for every model, so each model's AUC and its difference from the network's get a
  percentile interval.
- `verdict`: sentences computed from those intervals.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd
from scipy import stats

OUTPUTS = ("long", "short")
BLOCK = 20  # bars per bootstrap block: several horizons, about a month
RESAMPLES = 1_000


def volatility_scores(prices: pd.DataFrame) -> dict[str, np.ndarray]:
    """Unfitted scores per bar (bars x OUTPUTS), each using bars up to t only: `atr_close` (14-day
    average true range / close), `realised_vol` (std of the last 5 daily returns) and
    `momentum` (sign of the 20-day return; its negative for the short output)."""
    close = prices["close"].astype(float)
    prev = close.shift()
    true_range = pd.concat([prices["high"] - prices["low"], (prices["high"] - prev).abs(),
                            (prices["low"] - prev).abs()], axis=1).max(axis=1)
    atr = (true_range.rolling(14).mean() / close).to_numpy(float)
    vol = close.pct_change().rolling(5).std().to_numpy(float)
    mom = np.sign(close.pct_change(20).to_numpy(float))
    both = {"atr_close": atr, "realised_vol": vol}
    out = {k: np.nan_to_num(np.stack([v, v], axis=1), nan=0.0) for k, v in both.items()}
    out["momentum"] = np.nan_to_num(np.stack([mom, -mom], axis=1), nan=0.0)
    return out


def auc(y: np.ndarray, score: np.ndarray) -> float:
    """ROC-AUC from ranks (ties share their mean rank), NaN unless both classes are present:
    the probability that a random winning bar scores above a random losing one."""
    y = np.asarray(y, float)
    pos = int((y == 1).sum())
    neg = len(y) - pos
    if pos == 0 or neg == 0:
        return float("nan")
    ranks = stats.rankdata(score)
    return float((ranks[y == 1].sum() - pos * (pos + 1) / 2) / (pos * neg))


def direction_auc(y: np.ndarray, p: np.ndarray) -> float:
    """AUC of p_long - p_short for "the long side won" on the bars where exactly one side won
    (y: rows x OUTPUTS labels, p: the matching probabilities). 0.5 is no sense of direction."""
    one = y[:, 0] != y[:, 1]
    return auc(y[one, 0], p[one, 0] - p[one, 1])


def blocks(n: int, block: int, rng: np.random.Generator) -> np.ndarray:
    """Row positions of one circular block-bootstrap sample of n rows."""
    starts = rng.integers(0, n, size=math.ceil(n / block))
    return ((starts[:, None] + np.arange(block)) % n).ravel()[:n]


def table(y: np.ndarray, probs: Mapping[str, np.ndarray], level: float = 0.95,
          block: int = BLOCK, resamples: int = RESAMPLES, seed: int = 0,
          against: str = "network") -> pd.DataFrame:
    """One row per (model, output, and "direction"): AUC on these rows, its block-bootstrap
    interval (`low`, `high`), and the model's AUC minus `against`'s with its interval
    (`diff`, `diff_low`, `diff_high`; the draws are shared, so the difference is paired).
    `y` are the labels (rows x OUTPUTS), `probs` each model's scores, same rows."""
    y = np.asarray(y, float)
    rng = np.random.default_rng(seed)

    def scores(rows: np.ndarray) -> dict[tuple[str, str], float]:
        out = {}
        for name, p in probs.items():
            for j, o in enumerate(OUTPUTS):
                out[(name, o)] = auc(y[rows, j], p[rows, j])
            out[(name, "direction")] = direction_auc(y[rows], p[rows])
        return out

    point = scores(np.arange(len(y)))
    draws = pd.DataFrame([scores(blocks(len(y), block, rng)) for _ in range(int(resamples))])
    q = [(1 - level) / 2, (1 + level) / 2]
    rows = []
    for (name, o), value in point.items():
        d = draws[(name, o)]
        diff = d - draws[(against, o)]
        lo, hi = np.nanquantile(d, q)
        dlo, dhi = np.nanquantile(diff, q)
        rows.append({"model": name, "output": o, "auc": value, "low": lo, "high": hi,
                     "diff": value - point[(against, o)], "diff_low": dlo, "diff_high": dhi})
    return pd.DataFrame(rows).set_index(["model", "output"])


def verdict(scored: pd.DataFrame, against: str = "network", level: float = 0.95) -> str:
    """Sentences from `table`'s intervals: per output, which models rank the bars better or
    worse than `against` with the interval of the difference clear of zero, and whether the
    direction-only AUC's interval leaves 0.5."""
    lines = []
    for o in (*OUTPUTS, "direction"):
        part = scored.xs(o, level="output").drop(index=against)
        mine = scored.loc[(against, o)]
        better = [f"{m} ({r['auc']:.3f}, +{r['diff_low']:.3f}..+{r['diff_high']:.3f})"
                  for m, r in part.iterrows() if r["diff_low"] > 0]
        worse = [m for m, r in part.iterrows() if r["diff_high"] < 0]
        what = "which side wins (bars where exactly one does)" if o == "direction" \
            else f"the {o} output"
        text = (f"On {what} the {against}'s AUC is {mine['auc']:.3f} ({level:.0%} block-bootstrap "
                f"interval {mine['low']:.3f}..{mine['high']:.3f}")
        text += "; no better than a coin)" if mine["low"] <= 0.5 <= mine["high"] else ")"
        if better:
            text += "; ranked better by " + ", ".join(better)
        if worse:
            text += "; it ranks better than " + ", ".join(worse)
        if not better and not worse:
            text += "; no model differs from it beyond the interval"
        lines.append(text + ".")
    return "\n".join(lines)
