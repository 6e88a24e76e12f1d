"""Performance metrics from a daily equity curve and a list of closed-trade PnLs.

Conventions: ratios are fractions (0.05 = 5 %); returns are r_t = equity_t / equity_{t-1} - 1 with
equity_{-1} = starting cash, so N bars give N returns (as backtrader's TimeReturn). A metric that is
undefined (zero denominator, no trades) is None in the dict and NaN in array results; `to_json`
turns NaN/inf into null. Array functions work along the last axis, so the sweep scores every row
of a (combos x bars) matrix with the same code that scores one run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

YEAR = 252

# Keys every run reports (and the sweep reports per combination).
KEYS = ("final_value", "pnl", "total_return", "cagr", "sharpe", "sortino", "max_drawdown",
        "max_drawdown_money", "calmar", "exposure", "gross_exposure", "turnover", "trades_closed",
        "trades_open", "win_rate", "profit_factor", "expectancy", "sqn", "orders_rejected",
        "bankrupt")
# Ratios that mean nothing once equity has reached zero (a bankrupt run reports them as None).
RATIOS = ("sharpe", "sortino", "calmar")


def returns(equity: np.ndarray, cash: float) -> np.ndarray:
    """Simple per-bar returns, the first one against the starting cash."""
    prev = np.concatenate([np.full((*equity.shape[:-1], 1), cash), equity[..., :-1]], axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):  # a wiped-out account has no return
        return equity / prev - 1.0


def _daily_rf(risk_free: float) -> float:
    return (1.0 + risk_free) ** (1.0 / YEAR) - 1.0


def sharpe(rets: np.ndarray, risk_free: float = 0.0) -> np.ndarray | float:
    """Sharpe = mean(excess daily return) / std(ddof=1) * sqrt(252); NaN if std is 0 or N < 2."""
    ex = rets - _daily_rf(risk_free)
    if ex.shape[-1] < 2:
        return np.full(ex.shape[:-1], np.nan)[()]
    sd = ex.std(axis=-1, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(sd > 0, ex.mean(axis=-1) / sd * math.sqrt(YEAR), np.nan)[()]


def sortino(rets: np.ndarray, risk_free: float = 0.0) -> np.ndarray | float:
    """Sortino = mean(excess) / sqrt(mean(min(excess, 0)^2) over all bars) * sqrt(252); NaN if 0."""
    ex = rets - _daily_rf(risk_free)
    below = np.minimum(ex, 0.0)
    down = np.sqrt(np.einsum("...i,...i->...", below, below) / ex.shape[-1])
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(down > 0, ex.mean(axis=-1) / down * math.sqrt(YEAR), np.nan)[()]


def cagr(equity: np.ndarray, cash: float) -> np.ndarray | float:
    """CAGR = (final / cash) ** (1 / years) - 1, years = bars / 252; -1 once equity is <= 0."""
    growth = np.maximum(equity[..., -1] / cash, 0.0)
    return (growth ** (YEAR / equity.shape[-1]) - 1.0)[()]


def drawdown(equity: np.ndarray, cash: float) -> tuple[np.ndarray | float, np.ndarray | float]:
    """Max drawdown from the running peak (cash included), as (fraction, money), both positive."""
    curve = np.concatenate([np.full((*equity.shape[:-1], 1), cash), equity], axis=-1)
    down = np.maximum.accumulate(curve, axis=-1)
    np.subtract(down, curve, out=down)
    money = down.max(axis=-1)
    np.divide(down, curve + down, out=down)  # peak = curve + drop
    return down.max(axis=-1)[()], money[()]


def calmar(cagr_: np.ndarray | float, max_dd: np.ndarray | float) -> np.ndarray | float:
    """Calmar = CAGR / max drawdown; NaN without a drawdown."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(np.asarray(max_dd) > 0, cagr_ / np.asarray(max_dd), np.nan)[()]


def exposure(value: np.ndarray) -> np.ndarray | float:
    """Exposure (time in market) = share of bars that end with an open position."""
    return (value != 0).mean(axis=-1)[()]


def gross_exposure(value: np.ndarray, equity: np.ndarray) -> np.ndarray | float:
    """Gross exposure = mean over bars of |position value| / equity at the close (1.0 = all
    equity deployed every bar; buy-and-hold is 1.0); bars with equity <= 0 count as 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(equity > 0, np.abs(value) / equity, 0.0)
    return ratio.mean(axis=-1)[()]


def turnover(traded: np.ndarray | float, equity: np.ndarray) -> np.ndarray | float:
    """Turnover = total traded notional / mean equity / years (times the book turns a year)."""
    return (traded / equity.mean(axis=-1) / (equity.shape[-1] / YEAR))[()]


def autocorrelation(x: np.ndarray, lags: Sequence[int]) -> np.ndarray:
    """Autocorrelation of each row of `x` at `lags` (e.g. of |daily returns|: volatility clustering)."""
    x = np.atleast_2d(x)
    x = x - x.mean(axis=1, keepdims=True)
    var = (x * x).sum(axis=1)
    return np.stack([(x[:, k:] * x[:, :-k]).sum(axis=1) / var for k in lags], axis=1)


def trade_stats(pnl: np.ndarray, group: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """Closed-trade statistics for k groups (sweep columns) from flat arrays of PnL and group id
    (see `trade_stats_from_sums`)."""
    return trade_stats_from_sums(
        np.bincount(group, minlength=k).astype(float),
        np.bincount(group, pnl >= 0, minlength=k),
        np.bincount(group, pnl, minlength=k),
        np.bincount(group, pnl * pnl, minlength=k),
        np.bincount(group, np.where(pnl > 0, pnl, 0.0), minlength=k),
        -np.bincount(group, np.where(pnl < 0, pnl, 0.0), minlength=k))


def trade_stats_from_sums(n: np.ndarray, won: np.ndarray, total: np.ndarray, squares: np.ndarray,
                          profit: np.ndarray, loss: np.ndarray) -> dict[str, np.ndarray]:
    """Closed-trade statistics from per-group counts and sums of PnL, PnL^2, profits, losses.

    won = pnl >= 0 (backtrader's rule); win_rate = won / closed; profit_factor = gross profit /
    gross loss (NaN without a loss); expectancy = mean PnL per trade;
    SQN = sqrt(N) * mean / std(ddof=1) of trade PnL (NaN if N < 2 or std is 0).
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = total / n
        var = np.maximum(squares - n * mean * mean, 0.0) / (n - 1)
        sd = np.sqrt(var)
        return {
            "trades_closed": n,
            "trades_won": won,
            "trades_lost": n - won,
            "win_rate": np.where(n > 0, won / n, np.nan),
            "profit_factor": np.where(loss > 0, profit / loss, np.nan),
            "expectancy": np.where(n > 0, mean, np.nan),
            "sqn": np.where((n > 1) & (sd > 1e-12 * np.abs(mean)), np.sqrt(n) * mean / sd, np.nan),
        }


def streaks(won: np.ndarray) -> tuple[int, int]:
    """Longest runs of consecutive winning and losing trades."""
    best = {True: 0, False: 0}
    run, last = 0, None
    for w in map(bool, won):
        run = run + 1 if w == last else 1
        last = w
        best[w] = max(best[w], run)
    return best[True], best[False]


def equity_metrics(equity: np.ndarray, cash: float, value: np.ndarray,
                   traded: np.ndarray | float, risk_free: float = 0.0) -> dict[str, Any]:
    """Equity-curve metrics for one run, or for every row of (combos x bars) matrices; `value`
    is the (gross) value of the positions at each close, `traded` the total notional traded."""
    rets = returns(equity, cash)
    growth = cagr(equity, cash)
    dd, dd_money = drawdown(equity, cash)
    return {
        "final_value": equity[..., -1],
        "pnl": equity[..., -1] - cash,
        "total_return": equity[..., -1] / cash - 1.0,
        "cagr": growth,
        "sharpe": sharpe(rets, risk_free),
        "sortino": sortino(rets, risk_free),
        "max_drawdown": dd,
        "max_drawdown_money": dd_money,
        "calmar": calmar(growth, dd),
        "exposure": exposure(value),
        "gross_exposure": gross_exposure(value, equity),
        "turnover": turnover(traded, equity),
    }


def summarize(equity: np.ndarray, cash: float, value: np.ndarray, traded: float,
              pnl: np.ndarray, trade_returns: np.ndarray, trades_open: int,
              risk_free: float = 0.0, rejected: int = 0, bankrupt: bool = False
              ) -> dict[str, Any]:
    """The metrics dict of one run: equity-curve metrics plus statistics of the closed trades
    (`pnl` and `trade_returns`, in exit order); open trades are only counted. A `bankrupt` run
    (equity reached <= 0) gets no ratio metrics (RATIOS are None) and a CAGR of -100 %."""
    out = equity_metrics(equity, cash, value, traded, risk_free)
    out.update(trade_stats(pnl, np.zeros(len(pnl), dtype=np.intp), 1))
    out = {key: scalar(value) for key, value in out.items()}
    won_streak, lost_streak = streaks(pnl >= 0)
    some = len(pnl) > 0
    out.update({
        "trades_open": trades_open,
        "trades_closed": len(pnl),
        "trades_won": int((pnl >= 0).sum()),
        "trades_lost": int((pnl < 0).sum()),
        "pnl_closed": float(pnl.sum()),
        "win_streak": won_streak,
        "loss_streak": lost_streak,
        "avg_trade_return": float(trade_returns.mean()) if some else None,
        "best_trade_return": float(trade_returns.max()) if some else None,
        "worst_trade_return": float(trade_returns.min()) if some else None,
        "bars": len(equity),
        "orders_rejected": int(rejected),
        "bankrupt": bool(bankrupt),
    })
    if bankrupt:
        out.update(dict.fromkeys(RATIOS), cagr=-1.0)
    return out


def benchmark(close: np.ndarray, cash: float, risk_free: float = 0.0) -> dict[str, Any]:
    """Buy-and-hold of the same symbol and period: all cash in at the first close, no costs."""
    equity = cash * close / close[0]
    out = equity_metrics(equity, cash, equity, cash, risk_free)
    return {key: scalar(v) for key, v in out.items()} | {
        "trades_closed": 0, "trades_open": 1, "orders_rejected": 0, "bankrupt": False}


def scalar(value: Any) -> float | None:
    value = float(np.asarray(value, dtype=float).squeeze())
    return value if math.isfinite(value) else None


def to_json(obj: Any) -> Any:
    """A JSON-serialisable copy: numpy scalars to Python, NaN/inf to None, dates to ISO strings."""
    if isinstance(obj, Mapping):
        return {str(k): to_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_json(v) for v in obj]
    if isinstance(obj, pd.Timestamp):
        return obj.isoformat()
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def report(metrics: Mapping[str, Any]) -> str:
    """The workshop's report block: the "Trade Analysis Results" table and the summary line that
    SageMaker's metric regexes `Total PnL:(.*?)]` and `Sharpe Ratio:(.*?),` parse."""
    def num(key: str) -> float:
        return metrics.get(key) or 0.0
    rows = [
        ["Total Open", "Total Closed", "Total Won", "Total Lost"],
        [metrics["trades_open"], metrics["trades_closed"], metrics.get("trades_won", 0),
         metrics.get("trades_lost", 0)],
        ["Strike Rate", "Win Streak", "Losing Streak", "PnL Net"],
        [f"{num('win_rate') * 100:.2f}%", metrics.get("win_streak", 0),
         metrics.get("loss_streak", 0), round(num("pnl_closed"), 2)],
        ["DrawDown Pct", "MoneyDown", "", ""],
        [f"{num('max_drawdown') * 100:.2f}%", round(num("max_drawdown_money"), 2), "", ""],
    ]
    lines = ["Trade Analysis Results:"]
    lines += [("{:<15}" * 5).format("", *row) for row in rows]
    lines.append(f"[SQN:{num('sqn'):.2f}, Sharpe Ratio:{num('sharpe'):.2f}, "
                 f"Final Portfolio:{num('final_value'):.2f}, Total PnL:{num('pnl'):.2f}]")
    return "\n".join(lines)


def print_report(metrics: Mapping[str, Any]) -> None:
    """Print `report(metrics)` (what the workshop's containers printed at the end of a run)."""
    print(report(metrics))


SHOWN = ("final_value", "total_return", "cagr", "sharpe", "sortino", "max_drawdown", "calmar",
         "exposure", "gross_exposure", "turnover", "trades_closed", "trades_open", "win_rate",
         "profit_factor", "sqn")


def compare(runs: Mapping[str, Any], benchmark: str = "buy and hold") -> pd.DataFrame:
    """One row per named run (anything with `.metrics`) plus buy-and-hold of the first run's
    symbol and period, over the metrics a reader compares first."""
    rows = {name: {k: r.metrics.get(k) for k in SHOWN} for name, r in runs.items()}
    first = next(iter(runs.values()))
    rows[benchmark] = {k: first.metrics["benchmark"].get(k) for k in SHOWN}
    return pd.DataFrame(rows).T.astype(float)


def bootstrap_interval(values: Any, level: float = 0.95, resamples: int = 10_000,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `values` (e.g. one test return per training
    seed): draw `resamples` samples of len(values) values with replacement, take each sample's
    mean, and return the (1 - level) / 2 and (1 + level) / 2 quantiles of those means (numpy's
    default linear interpolation). Seeded (numpy's default_rng(seed)), so the same values give
    the same interval on any machine.

    Read it as "how much the mean moves with the draw of seeds", not as a guarantee: with a
    handful of values the percentile interval is too narrow rather than too wide (it never
    leaves [min, max] of the values, and 5 values show little of the tails). Two values 1 and 3
    give means 1, 2, 3 with probabilities 1/4, 1/2, 1/4, so a 90 % interval is (1, 3) and a
    40 % one (2, 2).
    """
    data = np.asarray(values, dtype=float).ravel()
    if data.size == 0 or not np.isfinite(data).all():
        raise ValueError("bootstrap_interval needs at least one value, all finite")
    if not 0 < level < 1:
        raise ValueError(f"level must be inside (0, 1), got {level}")
    if int(resamples) < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.size, size=(int(resamples), data.size))].mean(axis=1)
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


EULER_GAMMA = 0.5772156649015329
EFFECTIVE_SHARE = 0.9  # share of the trials' return variance the effective count explains


def expected_max_sharpe(sharpe_std: float, trials: float) -> float:
    """The Sharpe the best of `trials` independent tries with no skill would show, for tries
    whose Sharpe ratios spread with standard deviation `sharpe_std` (Bailey and Lopez de Prado's
    SR0, same unit as `sharpe_std`); 0 for a single try."""
    if trials <= 1:
        return 0.0
    from scipy import stats

    return float(sharpe_std * ((1 - EULER_GAMMA) * stats.norm.ppf(1 - 1 / trials)
                               + EULER_GAMMA * stats.norm.ppf(1 - 1 / (trials * math.e))))


def deflated_sharpe(trial_sharpes: Any, rets: np.ndarray, trials: float | None = None
                    ) -> dict[str, float]:
    """Bailey and Lopez de Prado's deflated Sharpe ratio of the chosen run's daily returns `rets`
    among `trial_sharpes` (the annualised Sharpe ratio of every combination tried).

    A combination whose Sharpe is undefined (it never traded: a flat curve) still counts as a
    try, with Sharpe 0: dropping it would understate how many tries the choice was the best of.
    `trials` overrides the count used for the expected maximum (an effective count, see
    `effective_trials`); the spread of the Sharpe ratios always comes from every trial.
    Returns annualised `sharpe` and `expected_max_sharpe` (SR0), `trials` and `dsr`, the
    probability that the true Sharpe exceeds SR0 given the track's length, skew and kurtosis.
    """
    from scipy import stats

    year = math.sqrt(YEAR)
    srs = np.nan_to_num(np.asarray(trial_sharpes, float).ravel(), nan=0.0, posinf=0.0,
                        neginf=0.0) / year
    n = float(len(srs) if trials is None else trials)
    rets = np.asarray(rets, float)
    sd = float(np.std(rets, ddof=1)) if len(rets) > 1 else 0.0
    sr = float(np.mean(rets) / sd) if sd > 0 else float("nan")
    sr0 = expected_max_sharpe(float(np.std(srs, ddof=1)), n) if len(srs) > 1 else 0.0
    skew = float(stats.skew(rets)) if sd > 0 else float("nan")
    kurt = float(stats.kurtosis(rets, fisher=False)) if sd > 0 else float("nan")
    denom = 1 - skew * sr + (kurt - 1) / 4 * sr * sr
    ok = math.isfinite(sr) and denom > 0
    dsr = float(stats.norm.cdf((sr - sr0) * math.sqrt(len(rets) - 1) / math.sqrt(denom))) if ok \
        else float("nan")
    return {"sharpe": sr * year, "expected_max_sharpe": sr0 * year,
            "trials": int(n) if float(n).is_integer() else n, "dsr": dsr}


def effective_trials(rets: np.ndarray, share: float = EFFECTIVE_SHARE, limit: int = 2_000,
                     seed: int = 0) -> int:
    """How many independent tries a set of correlated trials amounts to: the number of
    principal components (eigenvalues of the correlation matrix of the trials' daily returns,
    `rets` trials x bars, largest first) that explain `share` of their variance, plus one for
    the trials whose returns never move (they never traded, and are all the same try).

    Neighbouring grid points trade almost the same days, so counting each as independent
    overstates the tries and makes the deflated Sharpe stricter than the search was; this count
    is the other bound. Beyond `limit` trials a seeded random sample of `limit` of them is used
    (the eigen-decomposition grows with the cube of the count)."""
    if not 0 < share <= 1:
        raise ValueError(f"share must be inside (0, 1], got {share}")
    rets = np.nan_to_num(np.asarray(rets, float), nan=0.0, posinf=0.0, neginf=0.0)
    if rets.ndim != 2 or rets.shape[0] == 0:
        raise ValueError(f"effective_trials wants a (trials x bars) matrix, got shape {rets.shape}")
    moving = rets.std(axis=1) > 0
    flat = int(not moving.all())
    live = rets[moving]
    if len(live) > limit:
        live = live[np.sort(np.random.default_rng(seed).choice(len(live), limit, replace=False))]
    if len(live) < 2:
        return len(live) + flat
    values = np.sort(np.clip(np.linalg.eigvalsh(np.corrcoef(live)), 0, None))[::-1]
    explained = np.cumsum(values) / values.sum()
    return int(np.searchsorted(explained, share - 1e-12) + 1) + flat
