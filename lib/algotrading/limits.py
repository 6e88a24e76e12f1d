"""The caps on what one command may take (rows, memory-sized arrays, bytes, seconds), each with a
default a research laptop survives and an environment variable that changes it.

A request over a cap is refused before the work starts (or, for a stream, as soon as it passes
the cap) with one line naming the limit and the variable that raises it. The table is the README's
reference ("Limits").
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from algotrading.errors import AlgotradingError


class LimitError(AlgotradingError, ValueError):
    """A request over one of the caps (or a cap's variable that is not a number)."""


@dataclass(frozen=True)
class Limit:
    env: str
    default: float
    unit: str
    what: str


LIMITS: dict[str, Limit] = {
    "query_rows": Limit("ALGO_QUERY_MAX_ROWS", 5_000_000, "rows", "rows one SQL query returns"),
    "whatif_cells": Limit("ALGO_WHATIF_MAX_CELLS", 20_000_000, "path-bars",
                          "paths x bars one what-if simulation holds"),
    "ppo_envs": Limit("ALGO_PPO_MAX_ENVS", 64, "environments", "PPO's n_envs"),
    "ppo_rollout": Limit("ALGO_PPO_MAX_ROLLOUT", 262_144, "steps",
                         "PPO's n_envs x n_steps (one rollout buffer)"),
    "ingest_bytes": Limit("ALGO_INGEST_MAX_BYTES", 2**30, "bytes", "one file ingested (csv, adx)"),
    "download_bytes": Limit("ALGO_DOWNLOAD_MAX_BYTES", 2**30, "bytes",
                            "one download (ingest public), streamed to the cache"),
    "download_seconds": Limit("ALGO_DOWNLOAD_DEADLINE", 900, "s", "one download, overall"),
    "http_bytes": Limit("ALGO_HTTP_MAX_BYTES", 64 * 2**20, "bytes",
                        "one API response (vendor feed, Alpaca)"),
    "http_seconds": Limit("ALGO_HTTP_DEADLINE", 120, "s", "one API call, overall"),
    "model_bytes": Limit("ALGO_MODEL_MAX_BYTES", 256 * 2**20, "bytes",
                         "a forecaster's model.tar.gz, unpacked (and as downloaded)"),
    "lock_seconds": Limit("ALGO_LOCK_TIMEOUT", 600, "s",
                          "waiting for another process's ingest to release the lake"),
}


def value(name: str) -> float:
    """The cap `name` (LIMITS): its environment variable if set, else the default."""
    limit = LIMITS[name]
    text = os.environ.get(limit.env, "").strip()
    if not text:
        return limit.default
    try:
        number = float(text.replace("_", ""))
    except ValueError:
        number = math.nan
    if not 0 < number < math.inf:
        raise LimitError(f"{limit.env}={text!r}: want a positive number ({limit.what}, in "
                         f"{limit.unit}; default {limit.default:,})")
    return number


def check(name: str, amount: float, subject: str, more: bool = False) -> None:
    """Refuse `amount` of `subject` over the cap `name`, in one line naming how to raise it
    (`more`: the amount is only known to pass the cap, as when a stream is cut there)."""
    cap = value(name)
    if amount > cap:
        limit = LIMITS[name]
        size = (f"more than {cap:,.0f} {limit.unit}, the limit" if more else
                f"{amount:,.0f} {limit.unit} is over the limit of {cap:,.0f}")
        raise LimitError(f"{subject}: {size} ({limit.what}; {limit.env} raises it)")
