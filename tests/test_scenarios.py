"""What-if scenarios: generators are seeded, fitted and make valid bars; strategy outcomes are the
engine's own backtests on each path; the CLI prints the distribution."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from algotrading import backtest, scenarios
from algotrading.cli import main


@pytest.fixture(scope="module")
def prices() -> pd.DataFrame:
    """1,500 bars with volatility clustering (a GARCH path) and real-looking bar shapes."""
    rng = np.random.default_rng(7)
    n = 1500
    var, r = 1e-4, np.empty(n)
    for t in range(n):
        r[t] = np.sqrt(var) * rng.standard_t(5) * np.sqrt(3 / 5)
        var = 2e-6 + 0.1 * r[t] ** 2 + 0.88 * var
    close = 100 * np.exp(np.cumsum(r + 2e-4))
    open_ = np.concatenate([[100.0], close[:-1]]) * np.exp(rng.normal(0, 0.002, n))
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0, 0.004, n)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0, 0.004, n)))
    index = pd.bdate_range("2000-01-03", periods=n, name="dt")
    return pd.DataFrame({"open": open_, "high": high, "low": low, "close": close,
                         "vol": rng.integers(1000, 5000, n).astype(float)}, index=index)


@pytest.mark.parametrize("model", scenarios.MODELS)
def test_paths_are_seeded_valid_bars(prices, model):
    paths = scenarios.simulate(prices, model, paths=20, bars=300, seed=3)
    again = scenarios.simulate(prices, model, paths=20, bars=300, seed=3)
    other = scenarios.simulate(prices, model, paths=20, bars=300, seed=4)
    assert paths.close.shape == (20, 300) and len(paths.index) == 300
    np.testing.assert_array_equal(paths.close, again.close)
    np.testing.assert_array_equal(paths.high, again.high)
    assert not np.array_equal(paths.close, other.close)
    for i in range(len(paths)):
        backtest.check_prices(paths.frame(i))  # finite, > 0, low <= open/close <= high
    # a plausible intraday range: not O=H=L=C, and of the history's order of magnitude
    real = ((prices["high"] - prices["low"]) / prices["close"]).mean()
    sim = ((paths.high - paths.low) / paths.close).mean()
    assert 0.3 * real < sim < 3 * real
    assert (paths.open != paths.close).mean() > 0.9


def test_fits_recover_the_history(prices):
    gbm = scenarios.fit(prices, "gbm")
    r = scenarios.log_returns(prices)
    assert gbm["mu"] == pytest.approx(r.mean()) and gbm["sigma"] == pytest.approx(r.std(ddof=1))
    garch = scenarios.fit(prices, "garch")
    assert 0.5 < garch["alpha"] + garch["beta"] < 1 and 2 < garch["nu"] < 30
    assert scenarios.fit(prices, "bootstrap")["block"] >= 1
    with pytest.raises(ValueError, match="model='nope'"):
        scenarios.fit(prices, "nope")
    with pytest.raises(ValueError, match="at least 101 bars"):
        scenarios.fit(prices.iloc[:50], "gbm")


def test_bootstrap_reuses_history_in_blocks(prices):
    paths = scenarios.simulate(prices, "bootstrap", paths=5, bars=400, seed=1, block=50)
    hist = scenarios.log_returns(prices)
    sim = paths.returns()
    assert np.isin(np.round(sim, 12), np.round(hist, 12)).all()  # every return is a historical one
    # consecutive simulated returns mostly follow each other in the history (blocks of ~50)
    pos = {v: i for i, v in enumerate(np.round(hist, 12))}
    seq = [pos[v] for v in np.round(sim[0], 12)]
    follows = [b == (a + 1) % len(hist) for a, b in zip(seq[:-1], seq[1:], strict=True)]
    assert 0.9 < np.mean(follows) < 1


def test_garch_paths_cluster_volatility_and_gbm_do_not(prices):
    garch = scenarios.diagnostics(prices, scenarios.simulate(prices, "garch", 50, 1500, seed=0))
    gbm = scenarios.diagnostics(prices, scenarios.simulate(prices, "gbm", 50, 1500, seed=0))
    assert garch.loc["acf(|r|) lag 1", "simulated median"] > 0.05
    assert abs(gbm.loc["acf(|r|) lag 1", "simulated median"]) < 0.05
    assert garch.loc["excess kurtosis", "simulated median"] > gbm.loc["excess kurtosis", "simulated median"]
    vol = gbm.loc["ann. volatility"]
    assert vol["simulated 5%"] < vol["history"] < vol["simulated 95%"]


def test_outcomes_are_the_engines_backtests(prices):
    paths = scenarios.simulate(prices, "gbm", paths=6, bars=500, seed=2)
    params = dict(fast_period=10, slow_period=40, commission_bps=1.0)
    outcome = scenarios.run("sma", paths, **params)
    for i in (0, 5):
        result = backtest.run("sma", paths.frame(i), **params)
        row = outcome.table.iloc[i]
        assert row["total_return"] == pytest.approx(result.metrics["total_return"])
        assert row["trades_closed"] == result.metrics["trades_closed"]
        assert row["sharpe"] == pytest.approx(result.metrics["sharpe"])
        assert row["max_drawdown"] == pytest.approx(result.metrics["max_drawdown"])
        assert row["buy_and_hold_return"] == pytest.approx(result.metrics["benchmark"]["total_return"])
        np.testing.assert_allclose(outcome.equity[i], result.equity.to_numpy())
        assert bool(outcome.bankrupt[i]) == bool(result.metrics["bankrupt"])
    odds = scenarios.probabilities(outcome)
    assert odds["bankrupt"] == int(outcome.bankrupt.sum())
    t = outcome.table
    assert odds["p_loss"] == (t["total_return"] < 0).mean()
    assert odds["p_beat_buy_and_hold"] == (t["total_return"] > t["buy_and_hold_return"]).mean()
    dist = scenarios.distribution(outcome)
    assert dist.loc["total_return", "50%"] == pytest.approx(t["total_return"].median())
    assert list(dist.index) == list(scenarios.OUTCOMES)
    with pytest.raises(ValueError, match="start"):
        scenarios.run("sma", paths, start="2001-01-01")


def test_cost_stress_only_lowers_the_result(prices):
    table = scenarios.cost_stress("sma", prices, (0, 1, 2, 5), fast_period=10, slow_period=40,
                                  commission_bps=2.0, slippage_bps=3.0)
    values = table["final_value"].to_numpy(float)
    assert list(table.index) == ["costs x0", "costs x1", "costs x2", "costs x5"]
    assert (np.diff(values) < 0).all()
    free = backtest.run("sma", prices, fast_period=10, slow_period=40).metrics["final_value"]
    assert values[0] == pytest.approx(free)


def test_whatif_cli_prints_the_distribution(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ALGO_LAKE", str(tmp_path / "lake"))
    assert main(["ingest", "sample", "--symbols", "GSPC"]) == 0
    capsys.readouterr()
    args = ["whatif", "sma", "--symbol", "GSPC", "--model", "bootstrap", "--paths", "8", "--bars", "600",
            "--param", "fast_period=20", "--param", "slow_period=50", "--seed", "1", "--format", "csv"]
    assert main(args) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("sma on 8 bootstrap paths of 600 bars fitted to GSPC (seed 1): P(loss) ")
    assert out[1].startswith("outcome,mean,std,5%") and len(out) == 2 + len(scenarios.OUTCOMES)
    assert main(args) == 0 and capsys.readouterr().out.splitlines() == out  # seeded
    assert main(["whatif", "sma", "--symbol", "GSPC", "--paths", "0"]) == 2
    assert "paths=0: want at least 1" in capsys.readouterr().err


def test_whatif_over_the_cell_limit_is_refused_before_simulating(prices, monkeypatch, capsys,
                                                                 tmp_path):
    with pytest.raises(ValueError, match=r"paths=1,000,000 x bars=5,000: 5,000,000,000 path-bars is "
                                         r"over the limit of 20,000,000 \(paths x bars one what-if "
                                         r"simulation holds; ALGO_WHATIF_MAX_CELLS raises it\)"):
        scenarios.simulate(prices, "garch", paths=1_000_000, bars=5000)
    monkeypatch.setenv("ALGO_WHATIF_MAX_CELLS", "1000")
    with pytest.raises(ValueError, match="over the limit of 1,000"):
        scenarios.simulate(prices, "gbm", paths=11, bars=100)
    assert scenarios.simulate(prices, "gbm", paths=10, bars=100).close.shape == (10, 100)
    monkeypatch.setenv("ALGO_LAKE", str(tmp_path / "lake"))
    assert main(["ingest", "sample", "--symbols", "GSPC"]) == 0
    capsys.readouterr()
    assert main(["whatif", "sma", "--symbol", "GSPC", "--paths", "100000"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ALGO_WHATIF_MAX_CELLS raises it" in err


def test_garch_is_variance_targeted_with_capped_persistence(prices):
    fitted = scenarios.fit(prices, "garch")
    r = scenarios.log_returns(prices)
    assert fitted["persistence"] == pytest.approx(fitted["alpha"] + fitted["beta"])
    assert fitted["persistence"] <= scenarios.PERSISTENCE_CAP + 1e-12
    assert fitted["persistence"] == pytest.approx(min(fitted["fitted_persistence"],
                                                      scenarios.PERSISTENCE_CAP))
    # variance targeting: the long-run variance omega / (1 - persistence) is the history's
    assert fitted["omega"] / (1 - fitted["persistence"]) == pytest.approx(r.var(ddof=1))
    assert fitted["long_run_vol"] == pytest.approx(r.std(ddof=1) * np.sqrt(252))
    assert 0.5 ** (1 / fitted["half_life_days"]) == pytest.approx(fitted["persistence"])
    # a near-integrated history (alpha + beta = 0.9995) is capped, not simulated as fitted
    rng = np.random.default_rng(11)
    var, x = 1e-4, np.empty(3000)
    for t in range(3000):
        x[t] = np.sqrt(var) * rng.standard_normal()
        var = 5e-9 + 0.08 * x[t] ** 2 + 0.9195 * var
    close = 100 * np.exp(np.cumsum(x))
    wild = pd.DataFrame({"open": close, "high": close * 1.001, "low": close * 0.999,
                         "close": close}, index=pd.bdate_range("2000-01-03", periods=3000))
    capped = scenarios.fit(wild, "garch")
    assert capped["fitted_persistence"] > scenarios.PERSISTENCE_CAP
    assert capped["persistence"] == pytest.approx(scenarios.PERSISTENCE_CAP)


@pytest.mark.parametrize("model", ["gbm", "garch"])
def test_simulated_bars_have_the_historys_mean_range(prices, model):
    paths = scenarios.simulate(prices, model, paths=200, bars=1000, seed=1)
    real = np.log(prices["high"] / prices["low"]).mean()
    sim = np.log(paths.high / paths.low).mean()
    assert sim == pytest.approx(real, rel=0.03)


def test_vol_check_compares_path_years_with_calendar_years(prices):
    paths = scenarios.simulate(prices, "bootstrap", paths=100, bars=1260, seed=0)
    check = scenarios.vol_check(prices, paths)
    r = pd.Series(np.diff(np.log(prices["close"].to_numpy())), index=prices.index[1:])
    years = r.groupby(r.index.year)
    own = years.std()[years.size() >= 200] * np.sqrt(252)
    assert check["history max"] == pytest.approx(own.max())
    assert check["history min"] == pytest.approx(own.min())
    first_year = np.diff(np.log(paths.close[3, :253])).std(ddof=1) * np.sqrt(252)
    assert first_year == pytest.approx(scenarios.annual_vols(paths.returns())[3 * 4])
    assert check["simulated 1%"] <= check["simulated median"] <= check["simulated 99%"]
    assert check["covers"] == (check["simulated 1%"] <= check["history min"]
                               and check["simulated 99%"] >= check["history max"])
    calm = scenarios.simulate(prices, "gbm", paths=50, bars=1260, seed=0)
    assert not scenarios.vol_check(prices, calm)["covers"]  # constant volatility cannot


@pytest.mark.parametrize("params", [dict(fast_period=10, slow_period=40),
                                    dict(fast_period=5, slow_period=20, long_only=True,
                                         stop_loss=0.03, commission_bps=2.0)])
def test_sma_paths_as_arrays_equal_a_frame_per_path(prices, params, monkeypatch):
    """The SMA's compiled path over the (paths x bars) arrays gives what a DataFrame per path
    through the strategy and the kernel gives, to the bit."""
    paths = scenarios.simulate(prices, "garch", paths=12, bars=400, seed=4)
    fused = scenarios.run("sma", paths, **params)
    monkeypatch.setattr(scenarios, "FUSED", False)
    framed = scenarios.run("sma", paths, **params)
    pd.testing.assert_frame_equal(fused.table, framed.table, check_exact=True)
    np.testing.assert_array_equal(fused.equity, framed.equity)


def test_bad_path_is_named(prices):
    from algotrading.schema import DataError

    paths = scenarios.simulate(prices, "gbm", paths=3, bars=200, seed=1)
    paths.high[2, 17] = paths.low[2, 17] / 2
    with pytest.raises(DataError, match=r"path 2, bar 17"):
        scenarios.run("sma", paths, fast_period=5, slow_period=20)
    with pytest.raises(ValueError, match="lookback of 250"):
        scenarios.run("sma", paths, fast_period=5, slow_period=250)


@pytest.mark.parametrize("seed", range(4))
def test_block_length_is_archs(prices, seed):
    """The bootstrap's block length without importing arch equals arch's own estimate."""
    from arch.bootstrap import optimal_block_length

    rng = np.random.default_rng(seed)
    series = [scenarios.log_returns(prices) ** 2, rng.normal(size=300),
              np.cumsum(rng.normal(size=800)) * 1e-3, rng.standard_t(3, 2000) ** 2]
    for x in series:
        assert scenarios.stationary_block_length(x) == optimal_block_length(x)["stationary"].iloc[0]


def _garch_series(seed: int, n: int, omega: float, alpha: float, beta: float, nu: float
                  ) -> np.ndarray:
    """n returns (in percent) of a GARCH(1,1) with standardised Student-t shocks, mean 0.03."""
    rng = np.random.default_rng(seed)
    z = rng.standard_t(nu, n) * np.sqrt((nu - 2) / nu)
    var, y = omega / (1 - alpha - beta), np.empty(n)
    for t in range(n):
        y[t] = 0.03 + np.sqrt(var) * z[t]
        var = omega + alpha * (y[t] - 0.03) ** 2 + beta * var
    return y


def _arch_fit(y: np.ndarray) -> dict[str, float]:
    from arch import arch_model

    from algotrading import numerics

    with numerics.one_thread():  # as garch_t fits: one BLAS thread
        res = arch_model(y, mean="Constant", vol="GARCH", p=1, q=1, dist="t").fit(disp="off")
    p = res.params
    return {"mu": p["mu"], "omega": p["omega"], "alpha": p["alpha[1]"], "beta": p["beta[1]"],
            "nu": p["nu"], "loglikelihood": res.loglikelihood,
            "status": res.optimization_result.status}


@pytest.fixture(scope="module")
def gspc() -> pd.DataFrame:
    from algotrading import schema, sources

    return schema.to_prices(sources.read("sample", symbols=["GSPC"]).frame, "GSPC")


@pytest.mark.parametrize("case", ["GSPC", "persistent", "short", "no ARCH", "fat tails"])
def test_garch_fit_is_archs(gspc, case):
    """`garch_t` (no arch at run time) against arch's own fit of the same model: every parameter
    and the log-likelihood to the bit. Exact, not within a tolerance, because it repeats arch's
    steps in arch's order (starting grid, backcast, variance bounds, the same SLSQP call) in the
    same process and BLAS: a difference means the steps diverged from arch's (a new arch
    version, say), which this test should report. Cases: the S&P 500 sample (5,030 returns);
    simulated GARCH-t series near integration, short, with alpha at its bound 0 (no ARCH
    effect), and with nu = 3."""
    y = {"GSPC": lambda: 100 * scenarios.log_returns(gspc),
         "persistent": lambda: _garch_series(2, 3000, 0.005, 0.05, 0.9495, 4),
         "short": lambda: _garch_series(1, 1000, 0.2, 0.15, 0.6, 8),
         "no ARCH": lambda: _garch_series(3, 500, 0.1, 0.0, 0.0, 30) * 10,
         "fat tails": lambda: _garch_series(4, 4000, 0.02, 0.1, 0.88, 3)}[case]()
    ours, theirs = scenarios.garch_t(y), _arch_fit(y)
    assert theirs["status"] == 0
    assert ours == theirs
    if case == "no ARCH":
        assert ours["alpha"] == 0.0  # the bound is active: the constrained path agrees too


def test_garch_paths_from_our_fit_are_the_paths_of_archs(prices, monkeypatch):
    """simulate(garch) from garch_t's parameters equals simulate(garch) from arch's fit."""
    ours = scenarios.simulate(prices, "garch", paths=30, bars=500, seed=2)
    monkeypatch.setattr(scenarios, "garch_t", _arch_fit)
    theirs = scenarios.simulate(prices, "garch", paths=30, bars=500, seed=2)
    assert ours.params == theirs.params
    for name in ("open", "high", "low", "close", "vol"):
        np.testing.assert_array_equal(getattr(ours, name), getattr(theirs, name))


@pytest.mark.slow
def test_whatif_cli_imports_neither_arch_nor_scipy_stats(tmp_path, monkeypatch, capsys):
    """arch (and scipy.stats, which it imports) cost 1.4 s of the garch what-if's start: the
    three models run in a fresh process without loading either."""
    import json
    import subprocess
    import sys

    monkeypatch.setenv("ALGO_LAKE", str(tmp_path / "lake"))
    assert main(["ingest", "sample", "--symbols", "GSPC"]) == 0
    script = ("import sys; from algotrading.cli import main\n"
              "for m in ('gbm', 'garch', 'bootstrap'):\n"
              "    assert main(['whatif', 'sma', '--symbol', 'GSPC', '--model', m, '--paths', '20',"
              " '--bars', '400', '--param', 'fast_period=5', '--param', 'slow_period=20']) == 0\n"
              "print(sorted(k for k in sys.modules if k == 'arch' or k.startswith(('arch.', "
              "'scipy.stats'))))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert sum(line.startswith("sma on 20 ") for line in lines) == 3  # the three models ran
    assert json.loads(lines[-1].replace("'", '"')) == []


def _whole_array_paths(prices: pd.DataFrame, model: str, paths: int, bars: int, seed: int
                       ) -> dict[str, np.ndarray]:
    """The paths as `simulate` built them before its compiled loops: numpy over whole (paths x
    bars) arrays, the same draws from the same generator (the reference for the loops)."""
    params = scenarios.fit(prices, model)
    rng = np.random.default_rng(seed)
    r_hist = scenarios.log_returns(prices)
    shape, hist_vol = scenarios._shapes(prices)
    n = len(r_hist)
    if model == "bootstrap":
        new = rng.random((paths, bars)) < 1.0 / params["block"]
        new[:, 0] = True
        starts = rng.integers(0, n, size=(paths, bars))
        t = np.arange(bars)
        last = np.maximum.accumulate(np.where(new, t, 0), axis=1)
        pick = (np.take_along_axis(starts, last, axis=1) + (t - last)) % n
        r, scale = r_hist[pick], None
    else:
        pick = rng.integers(0, n, size=(paths, bars), dtype=np.int32)
        if model == "gbm":
            r = rng.standard_normal((paths, bars)) * params["sigma"] + params["mu"]
            sigma = params["sigma"]
        else:
            nu = params["nu"]
            z = rng.standard_t(nu, size=(paths, bars)) * np.sqrt((nu - 2) / nu)
            sigma, eps = np.empty((paths, bars)), np.empty((paths, bars))
            v = np.full(paths, params["sigma0"] ** 2)
            for t in range(bars):
                sigma[:, t] = np.sqrt(v)
                eps[:, t] = sigma[:, t] * z[:, t]
                v = params["omega"] + params["alpha"] * eps[:, t] ** 2 + params["beta"] * v
            r = params["mu"] + eps
        scale = sigma / hist_vol[pick]
        target = np.mean(np.log(prices["high"].to_numpy()[1:] / prices["low"].to_numpy()[1:]))
        step = max(1, pick.size // 200_000)
        k, s, ret = pick.ravel()[::step], scale.ravel()[::step], r.ravel()[::step]
        gap, wicks = shape[k, 0] * s, (shape[k, 1] + shape[k, 2]) * s
        lo, hi = 0.0, 1.0
        while np.mean(hi * wicks + np.abs(ret - hi * gap)) < target and hi < 1e3:
            hi *= 2
        for _ in range(50):
            mid = (lo + hi) / 2
            below = np.mean(mid * wicks + np.abs(ret - mid * gap)) < target
            lo, hi = (mid, hi) if below else (lo, mid)
        scale = scale * ((lo + hi) / 2)
    start = float(prices["close"].iloc[0])
    close = np.exp(np.cumsum(r, axis=1) + np.log(start))
    gap, up, down = (shape[:, k][pick] * (1.0 if scale is None else scale) for k in range(3))
    open_ = np.concatenate([np.full((paths, 1), start), close[:, :-1]], axis=1) * np.exp(gap)
    return {"open": open_, "high": np.maximum(open_, close) * np.exp(up),
            "low": np.minimum(open_, close) * np.exp(-down), "close": close,
            "vol": prices["vol"].to_numpy(float)[1:][pick]}


@pytest.mark.parametrize("model", scenarios.MODELS)
def test_compiled_paths_equal_the_whole_array_steps(prices, model):
    """The compiled bar loops give the paths the whole-array numpy steps give, to the bit (the
    same exp: numpy's, over the whole block)."""
    paths = scenarios.simulate(prices, model, paths=40, bars=700, seed=5)
    expected = _whole_array_paths(prices, model, 40, 700, 5)
    for name, values in expected.items():
        np.testing.assert_array_equal(getattr(paths, name), values, err_msg=name)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -1.0, "low above open", "close above high"])
def test_the_first_bad_bar_is_the_whole_array_checks(prices, bad):
    """The compiled price check names the bar the whole-array comparisons find first (row-major:
    the lowest path, then its first bar), for each broken rule."""
    from algotrading.schema import DataError

    paths = scenarios.simulate(prices, "gbm", paths=6, bars=300, seed=2)
    for i, t in ((4, 250), (1, 40), (4, 10)):  # path 1 bar 40 comes first
        if bad == "low above open":
            paths.low[i, t] = paths.open[i, t] * 1.01
        elif bad == "close above high":
            paths.close[i, t] = paths.high[i, t] * 1.01
        else:
            paths.high[i, t] = bad
    o, h, lo, c = paths.open, paths.high, paths.low, paths.close
    with np.errstate(invalid="ignore"):
        good = (lo > 0) & (lo <= o) & (lo <= c) & (o <= h) & (c <= h) & (h < np.inf)
    i, t = (int(v[0]) for v in np.nonzero(~good))
    assert (i, t) == (1, 40)
    with pytest.raises(DataError, match=rf"path {i}, bar {t} "):
        scenarios.run("sma", paths, fast_period=5, slow_period=20)


def test_garch_fit_says_when_the_optimiser_did_not_converge(gspc, monkeypatch):
    """arch warned when SLSQP stopped short of convergence; garch_t does too, with the status."""
    import scipy.optimize

    real = scipy.optimize.minimize

    def stopped(*args, **kwargs):
        kwargs["options"] = {**kwargs.get("options", {}), "maxiter": 2}
        return real(*args, **kwargs)

    monkeypatch.setattr(scipy.optimize, "minimize", stopped)
    with pytest.warns(RuntimeWarning, match=r"GARCH fit on 5030 returns: .* status 9"):
        fitted = scenarios.garch_t(100 * scenarios.log_returns(gspc))
    assert fitted["status"] == 9
