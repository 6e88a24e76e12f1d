"""The `algotrading` command: ingest, query, backtest, sweep, train, run. Errors print one line and exit 2.

A STRATEGY is a built-in name (sma, ema, breakout, ml_forecast) or your own function
`f(prices, period=14, ...) -> positions` as path/to/file.py:function or package.module:function;
its keyword parameters are set with --param and swept with --grid, checked like the built-ins'.
Loading a file or module executes it, as `python file.py` would: run only code you trust."""

from __future__ import annotations

import argparse
import ast
import gc
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from algotrading.errors import ParameterError


def _value(text: str) -> object:
    """'10' -> 10, '0.5' -> 0.5, 'true' -> True, anything else stays a string."""
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _pairs(items: Sequence[str] | None, what: str) -> dict[str, str]:
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{what} {item!r}: want key=value")
        out[key.strip()] = value.strip()
    return out


GRID_VALUES = 100_000  # values one --grid range may expand to (the sweep also caps combinations)


def parse_grid(items: Sequence[str]) -> dict[str, list[object]]:
    """`k=a:b[:step]` (inclusive range) or `k=v1,v2,...` -> {k: [values]}."""
    grid: dict[str, list[object]] = {}
    for key, spec in _pairs(items, "--grid").items():
        if ":" in spec:
            parts = [_value(p) for p in spec.split(":")]
            if len(parts) not in (2, 3) or not all(isinstance(p, int | float) for p in parts):
                raise ValueError(f"--grid {key}={spec}: want a:b or a:b:step with numbers")
            lo, hi, step = (*parts, 1) if len(parts) == 2 else parts
            if step <= 0 or hi < lo:
                raise ValueError(f"--grid {key}={spec}: want a <= b and step > 0")
            count = int((hi - lo) / step + 1e-9) + 1
            if count > GRID_VALUES:
                raise ValueError(f"--grid {key}={spec}: {count:,} values; the limit is "
                                 f"{GRID_VALUES:,} per parameter")
            grid[key] = [lo + i * step for i in range(count)]
        else:
            grid[key] = [_value(v) for v in spec.split(",")]
    return grid


def _print_frame(frame: pd.DataFrame, fmt: str) -> None:
    if fmt == "csv":
        sys.stdout.write(frame.to_csv(index=False))
    elif fmt == "json":
        sys.stdout.write(frame.to_json(orient="records", date_format="iso") + "\n")
    else:
        with pd.option_context("display.max_rows", 200, "display.width", 200):
            print(frame.to_string(index=False))


def cmd_ingest(args: argparse.Namespace) -> None:
    from algotrading import lake, sources

    columns = _pairs(",".join(args.columns).split(",") if args.columns else None, "--columns")
    batch = sources.read(args.source, args.path, args.symbols, columns, corrections=args.corrections,
                         jump=args.jump, accept_jumps=args.accept_jumps)
    report = lake.write(batch.frame, lake=args.lake, replace=args.replace, restate=batch.restate,
                        provenance=batch.provenance())
    table = batch.summary().drop(columns="rows").join(report)
    with pd.option_context("display.max_rows", 200, "display.width", 200):
        print(table.to_string())
    restated = report.index[report["action"] == "replaced (re-adjusted history)"].tolist()
    if restated:
        print(f"re-adjusted history replaced for: {' '.join(restated)} (the export's prices "
              "differ on days the lake already had)")
    for c in batch.corrections:
        print(f"corrected {c['sym']} before {c['date']}: " + (f"prices x {c['factor']:.6g} "
              f"({c['rows']} rows)" if c["factor"] else "move accepted") + f" - {c['note']}")
    for j in batch.jumps:
        print(f"accepted {j['sym']} {j['date']}: open {j['open']:.2f} is {j['move']:+.1%} from "
              f"the previous close {j['prev_close']:.2f}")
    print(f"ingested {len(batch.frame)} rows for {len(report)} symbol(s): "
          f"{int(report['added'].sum())} added, {int(report['changed'].sum())} changed, "
          f"{int(report['kept'].sum())} kept, {int(report['removed'].sum())} removed")


def cmd_query(args: argparse.Namespace) -> None:
    from algotrading import query

    _print_frame(query.sql(args.sql, lake=args.lake), args.format)


def _prices(args: argparse.Namespace) -> pd.DataFrame:
    from algotrading import query

    return query.load_prices(args.symbol, args.start, args.end, lake=args.lake)


def _trading(args: argparse.Namespace, params: dict[str, object]) -> pd.DataFrame:
    """Bars for a backtest or sweep: every bar up to --end, with --start passed to the engine as
    `start` (the first bar traded; earlier bars warm the indicators up, as in `live replay`)."""
    from algotrading import query

    if args.start is not None:
        if "start" in params:
            raise ParameterError("give --start or --param start=..., not both")
        params["start"] = args.start
    return query.load_prices(args.symbol, None, args.end, lake=args.lake)


def cmd_backtest(args: argparse.Namespace) -> None:
    from algotrading import backtest, metrics

    params = {k: _value(v) for k, v in _pairs(args.param, "--param").items()}
    result = backtest.run(args.strategy, _trading(args, params), **params)
    if args.trades:
        _write_csv(result.trades, args.trades, index=False)
    if args.equity:
        frame = pd.concat([result.equity, result.positions], axis=1)
        _write_csv(frame, args.equity, index=True)
    stats = dict(result.metrics)
    bench = stats.pop("benchmark")
    if args.json:
        print(json.dumps(metrics.to_json({"strategy": args.strategy, "symbol": args.symbol,
                                          "params": result.params, "metrics": stats,
                                          "benchmark": bench}), sort_keys=True))
    else:
        print(metrics.compare({args.strategy: result}).T.to_string())
        print(result.report())


def _write_csv(frame: pd.DataFrame, path: str, index: bool) -> None:
    """Write a CSV all at once (a temporary file renamed into place: never half-written)."""
    target = os.path.abspath(path)
    temp = f"{target}.tmp{os.getpid()}"
    try:
        frame.to_csv(temp, index=index, date_format="%Y-%m-%d")
        os.replace(temp, target)
    finally:
        if os.path.exists(temp):
            os.remove(temp)


def cmd_sweep(args: argparse.Namespace) -> None:
    from algotrading import backtest

    params = {k: _value(v) for k, v in _pairs(args.param, "--param").items()}
    if args.backend == "aws":  # one SageMaker training job per shard, gathered into one table
        from algotrading import jobs
        from algotrading.backtest import job
        from algotrading.strategies import REGISTRY

        if args.strategy not in REGISTRY:
            raise ValueError(f"--backend aws runs the built-in strategies ({', '.join(REGISTRY)}); "
                             f"{args.strategy!r} is yours: sweep it locally (drop --backend aws)")

        names = job.sweep_jobs(args.strategy, args.symbol, parse_grid(args.grid), args.shards,
                               start=args.start, end=args.end, params=params)
        print(f"algotrading: waiting for {len(names)} training job(s): {' '.join(names)}",
              file=sys.stderr)
        jobs.wait(names)
        table = job.gather_sweep(names)
        table = backtest.rank(table, args.sort) if args.sort else table
        table = table.head(args.top) if args.top else table
    elif args.shards != 1:
        raise ValueError("--shards runs the shards as SageMaker jobs: add --backend aws")
    else:
        table = backtest.sweep(args.strategy, _trading(args, params), parse_grid(args.grid), sort=args.sort,
                               top=args.top, progress=None if sys.stderr.isatty() else False, **params)
    _print_frame(table, args.format)


def cmd_whatif(args: argparse.Namespace) -> None:
    from algotrading import scenarios

    params = {k: _value(v) for k, v in _pairs(args.param, "--param").items()}
    prices = _prices(args)
    paths = scenarios.simulate(prices, args.model, args.paths, args.bars, args.seed)
    outcome = scenarios.run(args.strategy, paths, **params)
    odds = scenarios.probabilities(outcome)
    print(f"{args.strategy} on {odds['paths']} {args.model} paths of {paths.close.shape[1]} bars "
          f"fitted to {args.symbol} (seed {args.seed}): P(loss) {odds['p_loss']:.1%}, "
          f"P(beat buy and hold) {odds['p_beat_buy_and_hold']:.1%}")
    _print_frame(scenarios.distribution(outcome).round(4).rename_axis("outcome").reset_index(),
                 args.format)


def cmd_train(args: argparse.Namespace) -> None:
    from dataclasses import asdict

    from algotrading.config import settings
    from algotrading.models import forecast, train

    params = {k: _value(v) for k, v in _pairs(args.param, "--param").items()}
    if args.model == "ppo":
        _train_ppo(args, params)
        return
    cfg = forecast.Config.from_params({**params, "symbol": args.symbol})
    prices = _prices(args)
    if settings().backend == "aws":
        output = args.output_path or f"{settings().lake_path()}/models"
        job = train.submit(prices, cfg, output, wait=args.wait, role=args.role)
        print(f"training job {job}: artifact {output}/{job}/output/model.tar.gz")
        return
    folder = Path(args.out) if args.out else settings().run_path() / "models" / f"forecast-{cfg.symbol}"
    model, report = train.train_local(prices, cfg, folder)
    shown = ["roc_auc", "precision", "recall", "f1", "balanced_accuracy", "tp", "fp", "fn", "tn"]
    with pd.option_context("display.width", 200):
        print(report["rates"].round(3).to_string())
        print(report["evaluation"][shown].round(3).to_string())
    print(f"best epoch {model.meta['best_epoch']} of {len(report['history'])}; "
          f"config {json.dumps(asdict(cfg), sort_keys=True)}")
    print(f"artifact: {folder}")


def _train_ppo(args: argparse.Namespace, params: dict[str, object]) -> None:
    """PPO with the LN-LSTM policy (algotrading.rl.train): `train_end` and `seed`, engine
    settings and rl.train.HYPERPARAMETERS as --param; locally in-process, else a SageMaker job."""
    from algotrading.backtest import SETTINGS
    from algotrading.config import settings
    from algotrading.rl import train as rl

    train_end = str(params.pop("train_end", "2006-12-31"))
    seed = params.pop("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"--param seed={seed!r}: want a whole number >= 0")
    engine = {k: params.pop(k) for k in list(params) if k in SETTINGS}
    prices = _prices(args)
    if settings().backend == "aws":
        output = args.output_path or f"{settings().lake_path()}/models"
        job = rl.submit(prices, args.symbol, train_end, output, seed=seed, engine=engine,
                        hyper=params, wait=args.wait, **({"role": args.role} if args.role else {}))
        print(f"training job {job}: artifact {output}/{job}/output/model.tar.gz")
        return
    folder = Path(args.out) if args.out else (settings().run_path() / "models"
                                              / f"ppo-{args.symbol}-seed{seed}")
    trained = rl.train(prices, train_end, seed=seed, engine=engine, **params)
    rl.save(trained, folder)
    recent = trained.episode_rewards[-20:]
    print(f"trained on {trained.config['train_start']}..{trained.config['train_end']} "
          f"({trained.config['bars']} bars), seed {seed}, {trained.seconds:.1f} s; "
          f"mean reward of the last {len(recent)} episodes: "
          f"{(sum(recent) / len(recent)) if recent else float('nan'):.4f}")
    print(f"artifact: {folder}")


def cmd_run(args: argparse.Namespace) -> None:
    from algotrading import pipeline

    texts = _pairs(args.parameter, "-p")
    strings = pipeline.string_parameters(args.only) if texts else set()
    params = {k: v if k in strings else _value(v) for k, v in texts.items()}
    pipeline.run(only=args.only, parameters=params, update_notebooks=args.update_notebooks)


def cmd_live(args: argparse.Namespace) -> None:
    from algotrading.live import runner, service

    if args.live == "replay":
        params = {k: _value(v) for k, v in _pairs(args.param, "--param").items()}
        limits = {k: _value(v) for k, v in _pairs(args.limit, "--limit").items()}
        alerts = {k: _value(v) for k, v in _pairs(args.alert, "--alert").items()}
        state = service.replay(args.strategy, args.symbol, args.start, args.speed, args.end,
                               params=params, limits=limits, alerts=alerts,
                               journal_at=args.journal, run=args.run, broker_kind=args.broker)
    elif args.live == "flatten":
        runner.request_kill(service.journal(args.journal, args.run, must_exist=True), args.reason)
        print(f"kill request recorded in run {args.run}: the runner flattens at its next bar")
        return
    else:
        state = runner.status(service.journal(args.journal, args.run, must_exist=True))
    print(json.dumps(state, sort_keys=True) if args.json else
          "\n".join(f"{k}: {v}" for k, v in state.items()))


LAKE_HELP = "lake folder or s3:// prefix (default: ALGO_LAKE)"
STRATEGY_HELP = ("a built-in (sma, ema, breakout, ml_forecast) or your own function as "
                 "path/to/file.py:function or package.module:function (loading it executes that "
                 "file: only code you trust)")


def _bars_args(s: argparse.ArgumentParser, param_help: str, start_help: str | None = None,
               end_help: str | None = None) -> None:
    """The options of every command that reads one symbol's bars from the lake."""
    s.add_argument("--symbol", required=True)
    s.add_argument("--start", help=start_help)
    s.add_argument("--end", help=end_help)
    s.add_argument("--lake", help=LAKE_HELP)
    s.add_argument("--param", action="append", metavar="K=V", help=param_help)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="algotrading", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("ingest", help="load a source into the lake")
    s.add_argument("source", choices=("sample", "adx", "public", "csv"))
    s.add_argument("path", nargs="?", help="folder, file, URL or s3:// prefix of the source")
    s.add_argument("--symbols", nargs="+", help="only these symbols")
    s.add_argument("--lake", help=LAKE_HELP)
    s.add_argument("--replace", action="store_true",
                   help="replace each ingested symbol's history instead of merging by date")
    s.add_argument("--columns", action="append", metavar="NAME=CANONICAL,...",
                   help="csv: map your column names, e.g. Date=dt,Close=close,Volume=vol")
    s.add_argument("--corrections", metavar="CSV",
                   help="corrections file: sym,date,factor,note[,source] (factor multiplies the "
                        "prices before date; empty factor accepts the move as real)")
    s.add_argument("--jump", type=float, default=0.3, metavar="FRACTION",
                   help="refuse overnight moves |open/previous close - 1| above this that no "
                        "correction explains (default 0.3)")
    s.add_argument("--accept-jumps", action="store_true",
                   help="keep unexplained overnight moves above --jump (listed in the output)")
    s.set_defaults(func=cmd_ingest)

    s = sub.add_parser("query", help="run one SELECT on the lake (DuckDB or Athena)")
    s.add_argument("sql")
    s.add_argument("--format", choices=("table", "csv", "json"), default="table")
    s.add_argument("--lake", help=LAKE_HELP)
    s.set_defaults(func=cmd_query)

    for name, func in (("backtest", cmd_backtest), ("sweep", cmd_sweep)):
        s = sub.add_parser(name, help=f"{name} a strategy on one symbol from the lake")
        s.add_argument("strategy", help=STRATEGY_HELP)
        _bars_args(s, "strategy or engine parameter (repeatable)",
                   "first bar to trade (earlier bars warm the indicators up, as in live replay)")
        s.set_defaults(func=func)
        if name == "backtest":
            s.add_argument("--json", action="store_true", help="print one JSON object")
            s.add_argument("--trades", metavar="FILE", help="write the trades to this CSV")
            s.add_argument("--equity", metavar="FILE",
                           help="write equity and position per bar to this CSV")
        else:
            s.add_argument("--grid", action="append", required=True, metavar="K=A:B[:STEP]")
            s.add_argument("--sort", help="sort by this metric, best first (bankrupt rows last)")
            s.add_argument("--top", type=int, help="print only the first N rows")
            s.add_argument("--format", choices=("table", "csv", "json"), default="table")
            s.add_argument("--backend", choices=("local", "aws"), default="local",
                           help="aws: run the sweep as SageMaker training jobs (ALGO_STACK)")
            s.add_argument("--shards", type=int, default=1,
                           help="with --backend aws: split the grid's first parameter into N jobs")

    s = sub.add_parser("whatif", help="a strategy on many synthetic paths fitted to one symbol")
    s.add_argument("strategy", help=STRATEGY_HELP)
    _bars_args(s, "strategy or engine parameter (repeatable)", "fit the model from this date",
               "fit the model up to this date")
    s.add_argument("--model", choices=("gbm", "garch", "bootstrap"), default="gbm")
    s.add_argument("--paths", type=int, default=1000)
    s.add_argument("--bars", type=int, help="bars per path (default: as many as the history)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--format", choices=("table", "csv", "json"), default="table")
    s.set_defaults(func=cmd_whatif)

    s = sub.add_parser("train", help="train a model on one symbol (in-process, or a SageMaker job "
                                     "with ALGO_BACKEND=aws)")
    s.add_argument("model", choices=("forecast", "ppo"))
    _bars_args(s, "hyperparameter, e.g. epochs=50 (repeatable)")
    s.add_argument("--out", help="local: artifact folder (default: <run dir>/models/MODEL-SYM...)")
    s.add_argument("--output-path", help="aws: s3:// prefix for the job (default: <lake>/models)")
    s.add_argument("--role", help="aws: execution role ARN (default: the stack's)")
    s.add_argument("--wait", action="store_true", help="aws: wait for the job to finish")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("run", help="execute every notebook into runs/latest with a report")
    s.add_argument("--only", nargs="+", help="only notebooks whose path contains these")
    s.add_argument("-p", "--parameter", action="append", metavar="K=V",
                   help="papermill parameter for the notebooks that declare it")
    s.add_argument("--update-notebooks", action="store_true",
                   help="write the executed outputs back into the committed notebooks")
    s.set_defaults(func=cmd_run)

    live = sub.add_parser("live", help="paper/live trading: replay, status, flatten")
    group = live.add_subparsers(dest="live", required=True)
    for name, text in (("replay", "replay the lake's bars through the strategy runner"),
                       ("status", "the run's position, PnL, counts and alerts from its journal"),
                       ("flatten", "kill switch: the runner flattens at its next bar and stops")):
        s = group.add_parser(name, help=text)
        s.add_argument("--journal", help="SQLite path or dynamodb://TABLE (default: ALGO_JOURNAL)")
        s.add_argument("--run", default="paper", help="run name inside the journal")
        s.add_argument("--json", action="store_true", help="print one JSON object")
        s.set_defaults(func=cmd_live)
    replay = group.choices["replay"]
    replay.add_argument("strategy", help=STRATEGY_HELP)
    replay.add_argument("--symbol", required=True)
    replay.add_argument("--from", dest="start", required=True, help="first bar to trade (YYYY-MM-DD)")
    replay.add_argument("--to", dest="end")
    replay.add_argument("--speed", type=float, help="trading days per day of wall time (86400: 1/s)")
    replay.add_argument("--broker", choices=("paper", "alpaca"), default="paper")
    replay.add_argument("--param", action="append", metavar="K=V",
                        help="strategy parameter, sizing (size, fraction, cash) or paper cost")
    replay.add_argument("--limit", action="append", metavar="K=V", help="risk limit (see live.risk)")
    replay.add_argument("--alert", action="append", metavar="K=V", help="loss=MONEY or drawdown=FRAC")
    group.choices["flatten"].add_argument("--reason", default="manual")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    # What was imported so far (pandas, numpy: some 65,000 tracked objects) lives until exit:
    # frozen, no collection during the command, nor the one at exit, walks it again (about 0.1 s
    # of a cold `backtest --json`, docs/speed.md).
    gc.freeze()
    args = parser().parse_args(argv)
    try:
        args.func(args)
    except KeyboardInterrupt:
        print("algotrading: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # one clear line for the user; ALGO_DEBUG=1 shows the traceback
        if os.environ.get("ALGO_DEBUG"):
            raise
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"algotrading: error: {message}", file=sys.stderr)
        return 2
    finally:
        # And what the command loaded (numba's registries and compiled code, the paths): left
        # to the interpreter's exit, the collector walked and finalised them for 0.2-0.8 s after
        # a what-if had printed (docs/speed.md).
        gc.freeze()
    return 0


if __name__ == "__main__":
    sys.exit(main())
