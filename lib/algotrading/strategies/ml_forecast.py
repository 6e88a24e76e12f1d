"""The workshop's ML strategy: trade the forecaster's probabilities with brackets.

When flat after a bar's close: go long if p_long > `long_threshold` (and `go_long`), else short
if p_short > `short_threshold` (and `go_short`). The position is then left to the engine's exits,
which must be given as the model was trained (`engine_params(model)`: `take_profit`,
`stop_loss` from the actual fill price and `max_bars=horizon`), so labels, strategy and engine
share one definition (`features.exits`). The strategy knows when it is flat again from the same
rule, using bars up to each close only: it wants 0 on the exit bar, and can enter again from
the next bar's close (the engine re-enters only on a changed target).

Probabilities come from one batched forward pass over all bars, cached per model and prices, so a
threshold sweep costs one prediction and a cheap walk per combination.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from algotrading import features
from algotrading.strategies import Param, Strategy


@functools.lru_cache(maxsize=8)
def _model(path: str, stamp: float) -> Any:
    from algotrading.models import forecast

    return forecast.load(path)


def load(path: str) -> Any:
    """The forecaster at `path` (folder, model.tar.gz or s3:// URL), cached until it changes."""
    if not path:
        raise ValueError("strategy 'ml_forecast' needs model=<artifact folder, model.tar.gz or "
                         "s3:// URL> (see 3_Models/Train_Model_Forecast.ipynb)")
    local = Path(path)
    stamp = max((p.stat().st_mtime for p in (local, local / "model.json") if p.exists()),
                default=0.0)
    return _model(path, stamp)


def engine_params(model: Any) -> dict[str, Any]:
    """The engine exits the model was trained for: take_profit, stop_loss, max_bars."""
    cfg = model.config
    return {"take_profit": cfg.target, "stop_loss": cfg.stop, "max_bars": cfg.horizon}


def walk(enter_long: np.ndarray, enter_short: np.ndarray, exit_long: np.ndarray,
         exit_short: np.ndarray) -> np.ndarray:
    """Positions from entry signals and each entry's exit bar (NaN: held to the end)."""
    n = len(enter_long)
    out = np.zeros(n, dtype=np.int8)
    free = 0
    for t in np.flatnonzero(enter_long | enter_short).tolist():
        if t < free:
            continue
        side, ends = (1, exit_long) if enter_long[t] else (-1, exit_short)
        end = n if np.isnan(ends[t]) else int(ends[t])
        out[t:end] = side
        free = end + 1
    return out


def grid(prices: pd.DataFrame, combos: list[dict[str, Any]]) -> np.ndarray:
    """Targets for many (model, thresholds, go_long, go_short) sets, one column each."""
    cols = []
    cache: dict[str, tuple[pd.DataFrame, dict[int, np.ndarray]]] = {}
    for c in combos:
        if c["model"] not in cache:
            model = load(c["model"])
            cfg = model.config
            ends = {side: features.exits(prices, side, cfg.horizon, cfg.target, cfg.stop)[0]
                    for side in (1, -1)}
            cache[c["model"]] = (model.predict(prices), ends)
        p, ends = cache[c["model"]]
        enter_long = c["go_long"] & (p["p_long"].to_numpy() > c["long_threshold"])
        enter_short = c["go_short"] & (p["p_short"].to_numpy() > c["short_threshold"]) & ~enter_long
        cols.append(walk(enter_long, enter_short, ends[1], ends[-1]))
    return np.stack(cols, axis=1) if cols else np.zeros((len(prices), 0), dtype=np.int8)


STRATEGY = Strategy(
    name="ml_forecast",
    grid=grid,
    params={
        "model": Param("", str, help="artifact folder, model.tar.gz or s3:// URL"),
        "long_threshold": Param(0.5, float, ge=0, le=1, help="enter long when p_long is above"),
        "short_threshold": Param(0.5, float, ge=0, le=1, help="enter short when p_short is above"),
        "go_long": Param(True, bool, help="take long trades"),
        "go_short": Param(True, bool, help="take short trades"),
    },
)
