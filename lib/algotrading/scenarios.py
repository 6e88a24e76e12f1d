"""What-if scenarios: many seeded synthetic histories of one symbol, and a strategy's results on each.

Three generators, each fitted to the symbol's daily log returns:
- `gbm`: geometric Brownian motion (i.i.d. normal log returns with the history's mean and std);
- `garch`: GARCH(1,1) with Student-t shocks, so volatility clusters and tails are fat; fitted by
  `garch_t`, which repeats the `arch` package's maximum-likelihood steps without importing arch
  (equal to arch's fit to the bit; arch stays the reference in the tests). Fitted as is, alpha +
  beta on the S&P 500 is 0.9997: a shock's half-life of years and a long-run volatility of about
  79 % a year, paths that wander off into explosive volatility. So the fit is tamed before
  simulating: persistence is capped at `PERSISTENCE_CAP` (beta lowered, alpha kept) and omega is
  set by variance targeting, so the long-run variance is the history's (`fitted_persistence`
  keeps what the likelihood said);
- `bootstrap`: the stationary block bootstrap (Politis & Romano 1994) of the historical returns,
  with a mean block length chosen on squared returns (`stationary_block_length`, equal to
  `arch.bootstrap.optimal_block_length`) so the blocks keep the volatility clustering.

A close series alone would make O=H=L=C bars, which stops and next-open fills would see as
unrealistically calm. Each simulated bar therefore takes the shape of a historical bar (overnight
gap, wick above max(open, close), wick below min(open, close)): the bootstrap uses the very bar
its return came from; gbm and garch draw a random historical bar and rescale its shape by the
ratio of the simulated volatility to the (EWMA) volatility at that historical bar, times one
constant per simulation that makes the simulated bars' mean range log(high / low) equal the
history's (`_range_factor`). Without it the ratio is biased up (a randomly drawn calm bar divides by a small
volatility; on the S&P 500 the ratio averaged 1.44 and GBM bars were 23 % wider than history's),
which inflates stop hits. Volume comes from the same historical bar.

`vol_check` compares each simulated path-year's volatility with the history's calendar years:
the simulated range should cover history's without an explosive tail.

`run` backtests one strategy with fixed parameters on every path through the engine's compiled
single-symbol simulation (the same fills, costs and metrics as `backtest.run`), next to
buy-and-hold on the same path; `distribution` and `probabilities` summarise the outcomes.

Speed: the draws are numpy's (one generator, so a seed gives the same paths as ever); the GARCH
recursion, the bootstrap's block indices and the bars are compiled loops over the (paths x bars)
arrays, in parallel over paths (NUMBA_NUM_THREADS), with numpy's exp over the whole block, equal
to the whole-array steps they replaced to the bit. At 1,000 paths x 5,031 bars a what-if command
is then mostly start-up: pandas, DuckDB, numba and numba's first compiled call (which imports
scipy.linalg) before any path exists; docs/speed.md has the measurements.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np
import pandas as pd

from algotrading import limits, metrics, numerics

MODELS = ("gbm", "garch", "bootstrap")
YEAR = 252
EWMA_ALPHA = 0.06  # RiskMetrics' lambda = 0.94: the historical volatility that scales bar shapes
PERSISTENCE_CAP = 0.99  # alpha + beta of the simulated GARCH: a shock's half-life about 69 days
EXPLOSIVE = 2.0  # a path-year more volatile than this times history's worst year is explosive
OUTCOMES = ("total_return", "sharpe", "max_drawdown", "trades_closed", "buy_and_hold_return",
            "excess_return")


@dataclass(frozen=True)
class Paths:
    """`paths` synthetic OHLCV histories as (paths x bars) arrays on one business-day `index`,
    starting from the history's first close; `params` holds the fitted model."""

    model: str
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    vol: np.ndarray
    index: pd.DatetimeIndex
    params: dict[str, float]

    def __len__(self) -> int:
        return self.close.shape[0]

    def frame(self, i: int) -> pd.DataFrame:
        """Path `i` as a price frame the engine accepts (the columns of `load_prices`)."""
        return pd.DataFrame({"open": self.open[i], "high": self.high[i], "low": self.low[i],
                             "close": self.close[i], "vol": self.vol[i]}, index=self.index)

    def returns(self) -> np.ndarray:
        """Daily log returns of the closes, (paths x bars - 1)."""
        return np.diff(np.log(self.close), axis=1)


def log_returns(prices: pd.DataFrame) -> np.ndarray:
    """Close-to-close log returns of a price frame."""
    return np.diff(np.log(prices["close"].to_numpy(float)))


def _shapes(prices: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Per historical bar 1..n-1: (gap, upper wick, lower wick) in log units, and the EWMA
    volatility of the returns before it (what the shape is scaled by)."""
    o, h, lo, c = (prices[k].to_numpy(float) for k in ("open", "high", "low", "close"))
    gap = np.log(o[1:] / c[:-1])
    up = np.maximum(np.log(h[1:] / np.maximum(o[1:], c[1:])), 0.0)
    down = np.maximum(np.log(np.minimum(o[1:], c[1:]) / lo[1:]), 0.0)
    r = log_returns(prices)
    scale = pd.Series(r).shift(1).ewm(alpha=EWMA_ALPHA).std().to_numpy()
    scale = np.where(np.isfinite(scale) & (scale > 0), scale, r.std())
    return np.stack([gap, up, down], axis=-1), scale


def fit(prices: pd.DataFrame, model: str, block: float | None = None) -> dict[str, float]:
    """The generator's parameters fitted to `prices` (daily log returns)."""
    if model not in MODELS:
        raise ValueError(f"model={model!r}: choose one of {list(MODELS)}")
    r = log_returns(prices)
    if len(r) < 100:
        raise ValueError(f"need at least 101 bars to fit a scenario model, got {len(r) + 1}")
    if model == "gbm":
        return {"mu": float(r.mean()), "sigma": float(r.std(ddof=1))}
    if model == "garch":
        p = garch_t(100 * r)
        # The drift is the history's mean log return, as for gbm and the bootstrap (the
        # t-likelihood's mean weights calm days and overstates it), and paths start at the
        # history's variance. Persistence capped, omega by variance targeting (module doc).
        alpha, beta = p["alpha"], p["beta"]
        fitted = alpha + beta
        if fitted > PERSISTENCE_CAP:
            alpha = alpha if alpha < PERSISTENCE_CAP else PERSISTENCE_CAP / 2
            beta = PERSISTENCE_CAP - alpha
        var = float(r.var(ddof=1))
        persistence = alpha + beta
        return {"mu": float(r.mean()), "sigma0": math.sqrt(var),
                "omega": var * (1 - persistence), "alpha": alpha, "beta": beta,
                "nu": p["nu"], "fitted_omega": p["omega"] / 1e4,
                "fitted_persistence": fitted, "persistence": persistence,
                "long_run_vol": math.sqrt(var * YEAR),
                "fitted_long_run_vol": math.sqrt(p["omega"] / 1e4 / (1 - fitted) * YEAR)
                if fitted < 1 else float("inf"),
                "half_life_days": math.log(0.5) / math.log(persistence)}
    if block is None:
        block = stationary_block_length(r ** 2)
    if not block >= 1:
        raise ValueError(f"block={block}: the mean block length must be >= 1")
    return {"block": float(block)}


def stationary_block_length(x: np.ndarray) -> float:
    """The stationary bootstrap's optimal mean block length for the series `x` (Politis & White
    2004, with the correction of Patton, Politis & White 2009): the "stationary" column of
    `arch.bootstrap.optimal_block_length`, computed the same way step by step (tests compare
    them), here so that the bootstrap does not import arch (which imports scipy.stats and numba:
    1-2 s of the what-if CLI's start)."""
    nobs = x.shape[0]
    eps = x - x.mean(0)
    b_max = np.ceil(min(3 * np.sqrt(nobs), nobs / 3))
    kn = max(5, int(np.log10(nobs)))
    m_max = int(np.ceil(np.sqrt(nobs))) + kn
    cv = 2 * np.sqrt(np.log10(nobs) / nobs)  # the band autocorrelations count as zero within
    acv = np.zeros(m_max + 1)
    abs_acorr = np.zeros(m_max + 1)
    opt_m: int | None = None
    for i in range(m_max + 1):
        v1 = eps[i + 1:] @ eps[i + 1:]
        v2 = eps[:-(i + 1)] @ eps[:-(i + 1)]
        cross_prod = eps[i:] @ eps[:nobs - i]
        acv[i] = cross_prod / nobs
        abs_acorr[i] = np.abs(cross_prod) / np.sqrt(v1 * v2)
        if i >= kn and opt_m is None and np.all(abs_acorr[i - kn:i] < cv):
            opt_m = i - kn  # the first of kn insignificant autocorrelations in a row
    m = min(2 * max(opt_m, 1) if opt_m is not None else m_max, m_max)
    g = 0.0
    lr_acv = acv[0]
    for k in range(1, m + 1):
        lam = 1 if k / m <= 1 / 2 else 2 * (1 - k / m)  # the flat-top lag window
        g += 2 * lam * k * acv[k]
        lr_acv += 2 * lam * acv[k]
    d_sb = 2 * lr_acv ** 2
    return float(min(((2 * g ** 2) / d_sb) ** (1 / 3) * nobs ** (1 / 3), b_max))


# -- the GARCH(1,1)-t fit -------------------------------------------------------------------
NU_BOUNDS = (2.05, 500.0)  # the Student-t degrees of freedom the fit may take (arch's)
EWMA_LAMBDA = 0.94  # the backcast's and the variance bounds' smoothing (arch's)


def garch_t(y: np.ndarray) -> dict[str, float]:
    """Maximum likelihood fit of y_t = mu + e_t, e_t = sigma_t z_t, sigma2_t = omega +
    alpha e2_{t-1} + beta sigma2_{t-1}, z standardised Student-t with `nu` degrees of freedom:
    what `arch.arch_model(y, mean="Constant", vol="GARCH", p=1, q=1, dist="t").fit()` computes,
    step by step as arch does it (starting values from the same grid, backcast, variance bounds,
    parameter bounds and the alpha + beta <= 1 constraint, SLSQP from scipy.optimize), without
    importing arch: that import (scipy.stats, numba-compiled recursions) was 1.4 s of the garch
    what-if CLI. tests/test_scenarios.py holds the result to arch's. Returns mu, omega, alpha,
    beta, nu, the log-likelihood and the optimiser's status (0: converged)."""
    import scipy.optimize  # noqa: F401  (loads scipy's BLAS before one_thread() limits it)

    numerics.check("GARCH fit")
    with numerics.one_thread():  # SLSQP's steps and numpy's reductions round alike on any cores
        return _garch_t(np.ascontiguousarray(y, dtype=float))


def _garch_t(y: np.ndarray) -> dict[str, float]:
    import warnings

    from scipy.optimize import minimize
    from scipy.special import gammaln

    n = y.shape[0]
    mu0 = np.linalg.pinv(np.ones((n, 1))).dot(y)  # arch's least-squares start for the mean
    resids = y - mu0[0]
    backcast = _backcast(resids)
    var_bounds = _variance_bounds(resids)
    sigma2 = np.zeros(n)

    def variance(omega: float, alpha: float, beta: float, e: np.ndarray) -> np.ndarray:
        _garch_variance(omega, alpha, beta, np.absolute(e) ** 2.0, sigma2, backcast, var_bounds)
        return sigma2

    # Starting values: the best Gaussian likelihood on arch's grid (its gamma axis does not
    # enter a GARCH without asymmetry, so each (alpha, persistence) pair once, in arch's order).
    target = np.mean(np.absolute(resids) ** 2.0)
    target *= np.mean(resids ** 2) / target  # arch's rescaling, a no-op up to rounding
    best, start = -np.inf, np.empty(3)
    for a in (0.01, 0.05, 0.1, 0.2):
        for persistence in (0.5, 0.7, 0.9, 0.98):
            sv = np.array([(1.0 - persistence) * target, a, persistence - a])
            s2 = variance(*sv, resids)
            llf = float(np.sum(-0.5 * (np.log(2 * np.pi) + np.log(s2) + resids ** 2.0 / s2)))
            if llf > best:
                best, start = llf, sv
    std = resids / np.sqrt(variance(*start, resids))
    dev = std - np.mean(std, keepdims=True)
    kurt = np.mean((dev ** 2) ** 2) / np.mean(dev ** 2) ** 2.0  # scipy.stats.kurtosis, Pearson
    nu0 = max((4.0 * kurt - 6.0) / (kurt - 3.0) if kurt > 3.75 else 12.0, 4.0)
    x0 = np.hstack([mu0, start, [nu0]])

    v = float(np.mean(np.absolute(resids) ** 2.0))
    bounds = [(-np.inf, np.inf), (1e-8 * v, 10.0 * v), (0.0, 1.0), (0.0, 1.0), NU_BOUNDS]
    rows = np.zeros((6, 5))  # rows @ x - lower >= 0: omega, alpha, beta >= 0, alpha + beta <= 1,
    rows[[0, 1, 2], [1, 2, 3]] = 1.0  # and nu within NU_BOUNDS (arch states bounds twice)
    rows[3, 1:4] = [0.0, -1.0, -1.0]
    rows[4, 4], rows[5, 4] = 1.0, -1.0
    lower = np.array([0.0, 0.0, 0.0, -1.0, NU_BOUNDS[0], -NU_BOUNDS[1]])
    constraints = [{"type": "ineq", "fun": lambda x, c=c, b=b: np.dot(c, x) - b}
                   for c, b in zip(rows, lower, strict=True)]

    def negative_llf(x: np.ndarray) -> float:
        e = y - x[0]
        s2 = variance(x[1], x[2], x[3], e)
        nu = x[4]
        lls = gammaln((nu + 1) / 2) - gammaln(nu / 2) - np.log(np.pi * (nu - 2)) / 2
        lls -= 0.5 * (np.log(s2))
        lls -= ((nu + 1) / 2) * (np.log(1 + (e ** 2.0) / (s2 * (nu - 2))))
        return -float(np.sum(lls))

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Values in x were outside bounds during a minimize step",
                                RuntimeWarning)
        opt = minimize(negative_llf, x0, method="SLSQP", bounds=bounds, constraints=constraints,
                       options={"disp": False})
    if opt.status != 0:  # as arch's ConvergenceWarning
        warnings.warn(f"GARCH fit on {n} returns: the optimiser (SLSQP) stopped with status "
                      f"{opt.status}: {opt.message}", RuntimeWarning, stacklevel=3)
    mu, omega, alpha, beta, nu = (float(v) for v in opt.x)
    return {"mu": mu, "omega": omega, "alpha": alpha, "beta": beta, "nu": nu,
            "loglikelihood": -float(opt.fun), "status": int(opt.status)}


@numba.njit(cache=True, nogil=True)
def _garch_variance(omega: float, alpha: float, beta: float, e2: np.ndarray, sigma2: np.ndarray,
                    backcast: float, bounds: np.ndarray) -> None:
    """sigma2_t = omega + alpha e2_{t-1} + beta sigma2_{t-1} from the backcast, each kept within
    bounds[t] as arch's recursion keeps it (below the floor: the floor; above the ceiling: the
    ceiling plus the log of the excess), in arch's order of operations."""
    for t in range(e2.shape[0]):
        s = omega
        s += alpha * (backcast if t == 0 else e2[t - 1])
        s += beta * (backcast if t == 0 else sigma2[t - 1])
        if s < bounds[t, 0]:
            s = bounds[t, 0]
        elif s > bounds[t, 1]:
            s = bounds[t, 1] + (1000.0 if s > 1.7976931348623157e308 else math.log(s / bounds[t, 1]))
        sigma2[t] = s


def _ewma_weights(n: int) -> np.ndarray:
    w = EWMA_LAMBDA ** np.arange(min(75, n))
    return w / sum(w)  # the builtin sum, as arch's: summed left to right


def _backcast(resids: np.ndarray) -> float:
    """The variance before the first return: an EWMA of the first 75 squared residuals."""
    w = _ewma_weights(resids.shape[0])
    return float(np.sum((np.absolute(resids[:w.shape[0]]) ** 2.0) * w))


def _variance_bounds(resids: np.ndarray) -> np.ndarray:
    """Per observation, the floor and ceiling of the conditional variance during the fit (arch's
    loose bounds around an EWMA of the squared residuals, which keep the likelihood finite)."""
    n = resids.shape[0]
    w = _ewma_weights(n)
    ewma = np.zeros(n)
    _garch_variance(0.0, 1.0 - EWMA_LAMBDA, EWMA_LAMBDA, resids ** 2.0, ewma,
              w.dot(resids[:w.shape[0]] ** 2.0), np.ones((n, 2)) * np.array([-1.0, 1.7e308]))
    bounds = np.vstack((ewma / 1e6, ewma * 1e6)).T
    floor, most = float(np.var(resids)) / 1e8, 1 + float(np.max(resids ** 2.0))
    bounds[bounds[:, 0] < floor, 0] = floor
    bounds[bounds[:, 1] < most, 1] = most
    bounds[bounds[:, 1] > 1e7 * most, 1] = 1e7 * most
    return np.ascontiguousarray(bounds)


def simulate(prices: pd.DataFrame, model: str = "gbm", paths: int = 1000, bars: int | None = None,
             seed: int = 0, block: float | None = None) -> Paths:
    """`paths` seeded OHLCV paths of `bars` bars (default: as long as the history) from `model`
    fitted to `prices`. Same inputs and seed -> the same paths."""
    if paths < 1:
        raise ValueError(f"paths={paths}: want at least 1")
    bars = len(prices) if bars is None else bars
    if bars < 2:
        raise ValueError(f"bars={bars}: want at least 2")
    limits.check("whatif_cells", paths * bars, f"paths={paths:,} x bars={bars:,}")
    params = fit(prices, model, block)
    rng = np.random.default_rng(seed)
    r_hist = log_returns(prices)
    shape, hist_vol = _shapes(prices)
    n = len(r_hist)
    factor = 1.0
    if model == "bootstrap":
        pick = _stationary_indices(rng, n, paths, bars, params["block"])
        r, sigma, hist_vol = r_hist[pick], np.ones((1, 1)), np.empty(0)  # the bar's own shape
    else:
        pick = rng.integers(0, n, size=(paths, bars), dtype=np.int32)
        r, sigma = (_gbm(rng, params, paths, bars) if model == "gbm"
                    else _garch(rng, params, paths, bars))
        factor = _range_factor(prices, shape, r, pick, sigma, hist_vol)  # the ratio's bias (doc)
    # Two compiled passes and one exp over (4 x paths x bars): log close, gap, upper and lower
    # wick (scaled), exponentiated in place, then open = previous close x gap, high and low
    # around max/min(open, close). numpy's exp, as the whole-array steps before them used (40 MB
    # per array at 1,000 x 5,000), so the paths are the same to the bit.
    block = np.empty((4, paths, bars))
    _log_bars(r, pick, sigma, hist_vol, shape, factor, math.log(float(prices["close"].iloc[0])),
              block)
    del sigma
    np.exp(block, out=block)
    _open_high_low(block, float(prices["close"].iloc[0]))
    vol = r  # the returns' memory, already paged in, takes the volumes (indices in range: clip)
    if "vol" in prices:
        np.take(prices["vol"].to_numpy(float)[1:], pick, out=vol, mode="clip")
    else:
        vol.fill(0.0)
    index = pd.bdate_range(prices.index[0], periods=bars, name="dt")
    return Paths(model, block[1], block[2], block[3], block[0], vol, index, params)


@numba.njit(cache=True, parallel=True)
def _log_bars(r: np.ndarray, pick: np.ndarray, sigma: np.ndarray, hist_vol: np.ndarray,
              shape: np.ndarray, factor: float, log_start: float, out: np.ndarray) -> None:
    """Per path (in parallel) and bar: out[0] the log close (log start + cumulative return),
    out[1..3] the drawn bar's gap, upper wick and minus its lower wick, times
    sigma / hist_vol[bar] x factor (sigma per bar, or one value as (1, 1); no hist_vol: unscaled)."""
    per_bar = sigma.shape[1] > 1
    for i in numba.prange(r.shape[0]):
        acc = 0.0
        for t in range(r.shape[1]):
            acc += r[i, t]
            out[0, i, t] = acc + log_start
            k = pick[i, t]
            if hist_vol.shape[0] == 0:
                out[1, i, t], out[2, i, t] = shape[k, 0], shape[k, 1]
                out[3, i, t] = -shape[k, 2]
            else:
                s = (sigma[i, t] if per_bar else sigma[0, 0]) / hist_vol[k] * factor
                out[1, i, t], out[2, i, t] = shape[k, 0] * s, shape[k, 1] * s
                out[3, i, t] = -(shape[k, 2] * s)


@numba.njit(cache=True, parallel=True)
def _open_high_low(block: np.ndarray, start: float) -> None:
    """In place, from close and the exponentiated shapes: open = previous close x gap (the
    first: `start` x gap), high = max(open, close) x upper, low = min(open, close) x lower."""
    for i in numba.prange(block.shape[1]):
        prev = start
        for t in range(block.shape[2]):
            close = block[0, i, t]
            open_ = prev * block[1, i, t]
            block[1, i, t] = open_
            block[2, i, t] = max(open_, close) * block[2, i, t]
            block[3, i, t] = min(open_, close) * block[3, i, t]
            prev = close


def _range_factor(prices: pd.DataFrame, shape: np.ndarray, r: np.ndarray, pick: np.ndarray,
                  sigma: np.ndarray, hist_vol: np.ndarray, sample: int = 200_000) -> float:
    """The constant c that makes the simulated bars' mean log range, wicks + |return - gap|
    with the shapes scaled by c * sigma / hist_vol, equal the history's mean log(high / low)
    (bisection on up to `sample` simulated bars; the range grows with c)."""
    target = float(np.mean(np.log(prices["high"].to_numpy(float)[1:]
                                  / prices["low"].to_numpy(float)[1:])))
    step = max(1, pick.size // sample)
    k, ret = pick.ravel()[::step], r.ravel()[::step]
    s = (sigma[0, 0] if sigma.size == 1 else sigma.ravel()[::step]) / hist_vol[k]
    gap, wicks = shape[k, 0] * s, (shape[k, 1] + shape[k, 2]) * s
    buf, part = np.empty_like(gap), np.empty_like(gap)

    def mean_range(c: float) -> float:  # mean(c * wicks + |ret - c * gap|), without temporaries
        np.multiply(gap, c, out=buf)
        np.subtract(ret, buf, out=buf)
        np.abs(buf, out=buf)
        np.multiply(wicks, c, out=part)
        return float(np.mean(np.add(part, buf, out=buf)))

    lo, hi = 0.0, 1.0
    while mean_range(hi) < target and hi < 1e3:
        hi *= 2
    for _ in range(50):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if mean_range(mid) < target else (lo, mid)
    return (lo + hi) / 2


def _gbm(rng: np.random.Generator, p: Mapping[str, float], paths: int, bars: int
         ) -> tuple[np.ndarray, np.ndarray]:
    r = rng.standard_normal((paths, bars))
    r *= p["sigma"]
    r += p["mu"]
    return r, np.full((1, 1), p["sigma"])


def _garch(rng: np.random.Generator, p: Mapping[str, float], paths: int, bars: int
           ) -> tuple[np.ndarray, np.ndarray]:
    """GARCH(1,1) returns and volatilities of every path, from the history's variance."""
    nu = p["nu"]
    z = rng.standard_t(nu, size=(paths, bars))
    sigma = np.empty((paths, bars))
    _garch_paths(z, math.sqrt((nu - 2) / nu), p["mu"], p["omega"], p["alpha"], p["beta"],
                 p["sigma0"] ** 2, sigma)
    return z, sigma


@numba.njit(cache=True, parallel=True)
def _garch_paths(z: np.ndarray, unit: float, mu: float, omega: float, alpha: float, beta: float,
                 var: float, sigma: np.ndarray) -> None:
    """The GARCH(1,1) recursion per path (in parallel): shocks z x `unit` (unit variance), the
    returns mu + sigma x shock written over z, each bar's sigma into `sigma`."""
    for i in numba.prange(z.shape[0]):
        v = var
        for t in range(z.shape[1]):
            sigma[i, t] = math.sqrt(v)
            eps = sigma[i, t] * (z[i, t] * unit)
            z[i, t] = mu + eps
            v = omega + alpha * eps ** 2 + beta * v


def _stationary_indices(rng: np.random.Generator, n: int, paths: int, bars: int, block: float
                        ) -> np.ndarray:
    """Indices of the stationary bootstrap: a new block (random start) with probability 1/block,
    else the next observation, wrapping around the end (circular)."""
    u = rng.random((paths, bars))
    starts = rng.integers(0, n, size=(paths, bars))
    _block_indices(u, 1.0 / block, starts, n)
    return starts


@numba.njit(cache=True, parallel=True)
def _block_indices(u: np.ndarray, p_new: float, starts: np.ndarray, n: int) -> None:
    """In place over `starts`: per path (in parallel), bar t opens a block at starts[t] when
    t = 0 or u[t] < p_new, else continues the open block (its start + bars since, modulo n)."""
    for i in numba.prange(u.shape[0]):
        first = starts[i, 0]
        opened = 0
        for t in range(u.shape[1]):
            if t == 0 or u[i, t] < p_new:
                first, opened = starts[i, t], t
            starts[i, t] = (first + (t - opened)) % n


# -- how well each generator fits -------------------------------------------------------------
def _stats(r: np.ndarray, o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray
           ) -> dict[str, np.ndarray]:
    r = np.atleast_2d(r)
    z = (r - r.mean(axis=1, keepdims=True)) / r.std(axis=1, keepdims=True)
    acf_abs = metrics.autocorrelation(np.abs(r), (1, 5, 20))
    return {
        "ann. mean": r.mean(axis=1) * 252, "ann. volatility": r.std(axis=1, ddof=1) * math.sqrt(252),
        "skew": (z ** 3).mean(axis=1), "excess kurtosis": (z ** 4).mean(axis=1) - 3,
        "1% quantile": np.quantile(r, 0.01, axis=1), "acf(r) lag 1": metrics.autocorrelation(r, (1,))[:, 0],
        "acf(|r|) lag 1": acf_abs[:, 0], "acf(|r|) lag 5": acf_abs[:, 1],
        "acf(|r|) lag 20": acf_abs[:, 2],
        "mean range (h-l)/c": np.atleast_2d((h - lo) / c).mean(axis=1),
        "mean |gap| o/c[-1]": np.atleast_2d(np.abs(np.log(o[..., 1:] / c[..., :-1]))).mean(axis=1),
    }


def diagnostics(prices: pd.DataFrame, paths: Paths) -> pd.DataFrame:
    """The history's return statistics beside the simulated paths' (median and 5-95 % range):
    distribution shape, volatility clustering (autocorrelation of |r|) and the bar shape."""
    o, h, lo, c = (prices[k].to_numpy(float) for k in ("open", "high", "low", "close"))
    real = _stats(log_returns(prices), o, h, lo, c)
    sim = _stats(paths.returns(), paths.open, paths.high, paths.low, paths.close)
    return pd.DataFrame({
        "history": {k: float(v[0]) for k, v in real.items()},
        "simulated median": {k: float(np.median(v)) for k, v in sim.items()},
        "simulated 5%": {k: float(np.quantile(v, 0.05)) for k, v in sim.items()},
        "simulated 95%": {k: float(np.quantile(v, 0.95)) for k, v in sim.items()},
    })


# -- a strategy across the paths --------------------------------------------------------------
def annual_vols(r: np.ndarray, years: np.ndarray | None = None) -> np.ndarray:
    """Annualised volatility of each year of daily log returns `r`: per calendar year (`years`,
    one label per return; years with fewer than 200 returns skipped) for a history, else per
    block of 252 returns along the last axis of a (paths x bars) array."""
    if years is not None:
        frame = pd.Series(r).groupby(np.asarray(years))
        out = frame.std(ddof=1)[frame.size() >= 200]
        return out.to_numpy(float) * math.sqrt(YEAR)
    r = np.atleast_2d(r)
    whole = r.shape[1] // YEAR
    blocks = r[:, :whole * YEAR].reshape(r.shape[0], whole, YEAR)
    return (blocks.std(axis=2, ddof=1) * math.sqrt(YEAR)).ravel()


def vol_check(prices: pd.DataFrame, paths: Paths) -> dict[str, float | bool]:
    """Do the simulated years look like the history's? The history's calendar-year volatilities
    (min, median, max) beside the simulated path-years' 1/5/50/95/99 % quantiles; `covers` when
    the simulated 1..99 % range holds the history's min..max, `explosive` when more than 1 % of
    path-years exceed `EXPLOSIVE` times the history's worst year."""
    hist = annual_vols(log_returns(prices), prices.index[1:].year)
    sim = annual_vols(paths.returns())
    q = np.quantile(sim, [0.01, 0.05, 0.5, 0.95, 0.99])
    wild = float((sim > EXPLOSIVE * hist.max()).mean())
    return {"history min": float(hist.min()), "history median": float(np.median(hist)),
            "history max": float(hist.max()), "simulated 1%": float(q[0]),
            "simulated 5%": float(q[1]), "simulated median": float(q[2]),
            "simulated 95%": float(q[3]), "simulated 99%": float(q[4]),
            f"share above {EXPLOSIVE:g}x history max": wild,
            "covers": bool(q[0] <= hist.min() and q[4] >= hist.max()),
            "explosive": bool(wild > 0.01)}


@dataclass(frozen=True)
class Outcome:
    """One row per path (`table`: see OUTCOMES), every path's equity (paths x bars) and whether
    each path's account went bankrupt."""

    table: pd.DataFrame
    equity: np.ndarray
    index: pd.DatetimeIndex
    bankrupt: np.ndarray | None = None


def run(strategy: Any, paths: Paths, **params: Any) -> Outcome:
    """Backtest `strategy` with fixed `params` (strategy and engine) on every path, beside
    buy-and-hold of the same path (all cash in at the first close, no costs: the engine's
    benchmark). Each path is one run of the engine's compiled single-symbol simulation, exactly
    what `backtest.run` computes, without building a Result per path; paths go through a thread
    per core (the kernel releases the GIL)."""
    from algotrading.backtest import Settings, kernel
    from algotrading.backtest.engine import checked, curve_metrics, resolve, split_params, strategy_of
    from algotrading.backtest.fused import first_bad_bar, sma_paths, threads
    from algotrading.schema import DataError
    from algotrading.strategies import sma

    engine, own = split_params(params)
    settings = Settings(**engine)
    if settings.start is not None:
        raise ValueError("start: scenario paths are traded from their first bar")
    equity = np.empty(paths.close.shape)
    stats = kernel.stats_table(len(paths))
    no_trades = np.empty(0, kernel.TRADE_DTYPE)  # the kernel records trades only into a buffer with rows
    strat = strategy_of(strategy)
    if FUSED and strat is not None and strat.grid is sma.grid:
        # The built-in SMA: the (paths x bars) arrays go through one compiled parallel loop (its
        # averages, targets and simulation per path), no DataFrame per path.
        full = strat.check(own)
        if max(full["fast_period"], full["slow_period"]) >= paths.close.shape[1]:
            raise ValueError(f"a lookback of {max(full['fast_period'], full['slow_period'])} "
                             f"needs more than the paths' {paths.close.shape[1]} bars")
        if not (paths.index.is_monotonic_increasing and paths.index.is_unique):
            raise DataError("paths", "dates not in increasing order or duplicated")
        arrays = [np.ascontiguousarray(a, dtype=float)
                  for a in (paths.open, paths.high, paths.low, paths.close)]
        ok = sma_paths(*arrays, int(full["fast_period"]), int(full["slow_period"]),
                       bool(full["long_only"]), settings.rules, equity, stats)
        if not ok.all():  # the compiled loop checked each path's prices (fused.valid_bars)
            i = int(np.flatnonzero(~ok)[0])
            t = first_bad_bar(*(a[i] for a in arrays))
            raise DataError("paths", "want finite prices > 0 with low <= open, close <= high",
                            where=f"path {i}, bar {t} ({paths.index[t].date()})")
    else:
        def one(i: int) -> None:
            frame, (o, h, lo, c) = checked(paths.frame(i))
            want = np.ascontiguousarray(resolve(strategy, frame, own), dtype=float)
            kernel.simulate(kernel.Bars(o, h, lo, c), want, settings.rules, equity[i],
                            np.empty(len(c)), no_trades, stats, i)

        with ThreadPoolExecutor(max_workers=threads()) as pool:
            list(pool.map(one, range(len(paths))))
    curve = curve_metrics(stats, settings.cash)
    table = pd.DataFrame({
        "total_return": curve["total_return"], "sharpe": curve["sharpe"],
        "max_drawdown": curve["max_drawdown"],
        "trades_closed": stats["trades_closed"],
        "buy_and_hold_return": paths.close[:, -1] / paths.close[:, 0] - 1.0,
    })
    table["excess_return"] = table["total_return"] - table["buy_and_hold_return"]
    return Outcome(table[list(OUTCOMES)], equity, paths.index,
                   stats["bankrupt"].astype(bool))


FUSED = True  # False: every strategy through a DataFrame per path (the reference path, tests)


def distribution(outcome: Outcome, quantiles: Sequence[float] = (0.05, 0.25, 0.5, 0.75, 0.95)
                 ) -> pd.DataFrame:
    """Mean, spread and quantiles of each outcome over the paths (undefined Sharpes skipped)."""
    t = outcome.table
    out = pd.DataFrame({"mean": t.mean(), "std": t.std(ddof=1)})
    for q in quantiles:
        out[f"{q:.0%}"] = t.quantile(q)
    return out


def probabilities(outcome: Outcome) -> dict[str, float]:
    """Share of paths that lost money, and that beat buy-and-hold on the same path; how many
    paths went bankrupt."""
    t = outcome.table
    broke = int(outcome.bankrupt.sum()) if outcome.bankrupt is not None else 0
    return {"paths": len(t), "p_loss": float((t["total_return"] < 0).mean()),
            "p_beat_buy_and_hold": float((t["excess_return"] > 0).mean()), "bankrupt": broke}


def cost_stress(strategy: Any, prices: pd.DataFrame, multipliers: Sequence[float] = (0, 1, 2, 5),
                **params: Any) -> pd.DataFrame:
    """The strategy on the real history with commission and slippage multiplied by each of
    `multipliers` (0 = free), one row each."""
    from algotrading import backtest

    costs = ("commission_bps", "commission_per_share", "slippage_bps")
    base = {k: float(params.pop(k, 0.0)) for k in costs}
    rows = {}
    for k in multipliers:
        m = backtest.run(strategy, prices, **params, **{c: v * k for c, v in base.items()}).metrics
        rows[f"costs x{k:g}"] = {key: m[key] for key in metrics.SHOWN}
    return pd.DataFrame(rows).T
